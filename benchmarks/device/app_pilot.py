"""The app on a CUDA model, driven by keys (textual's pilot), for the device check:
`python app_pilot.py SCRIPT OUTDIR`. Steps three times, rewinds once, opens the diff and layers
views, and saves a screenshot of each screen to OUTDIR; exits 1 when the session is not at
step 3 with a loss after all that, or the app did not quit cleanly."""

import asyncio
import sys
from pathlib import Path

from modscope.launch import make_app


async def main(script: str, out: Path) -> int:
    app = make_app(script, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:

        async def press(*keys: str) -> None:
            for key in keys:
                await app.wait_idle(timeout=120)
                await pilot.press(key)
            await app.wait_idle(timeout=120)
            await pilot.pause()

        await press()
        await press("l")  # layers statistics from the next step on
        await press("escape", "s", "s", "s")
        (out / "app_steps.svg").write_text(app.export_screenshot())
        await press("l")
        (out / "app_layers.svg").write_text(app.export_screenshot())
        await press("escape", "u")
        (out / "app_rewound.svg").write_text(app.export_screenshot())
        await press("s", "d")
        (out / "app_diff.svg").write_text(app.export_screenshot())
        await press("escape")
        s = app.view.status
        output = s.last_output
        print(
            f"loaded {s.loaded}, step {s.step}, loss {s.last_loss}, rewind {s.rewind}, "
            f"output on {output.device if output else None}"
        )
        await press("q")
    ok = s.loaded and s.step == 3 and s.last_loss is not None and s.rewind
    print("app on CUDA:", "ok" if ok else "NOT OK", "exit", app.return_code)
    return 0 if ok and app.return_code == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]))))
