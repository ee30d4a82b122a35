"""Save docs/screenshot.svg: a real session on examples/powlog.py after three steps.

python docs/make_screenshot.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from modscope.launch import make_app

ROOT = Path(__file__).resolve().parent.parent


async def main() -> None:
    app = make_app(str(ROOT / "examples" / "powlog.py"), animations=False)
    async with app.run_test(size=(120, 34)) as pilot:
        for keys in (["s", "s", "s"], ["down", "right", "down", "down", "right", "down"]):
            await app.wait_idle(timeout=60)
            for key in keys:
                await pilot.press(key)
                await app.wait_idle(timeout=60)
        await pilot.pause()
        app.save_screenshot(filename="screenshot.svg", path=str(ROOT / "docs"))


if __name__ == "__main__":
    asyncio.run(main())
