"""The frozen program's entry point: `switchboard ...` is `app.cli:main`, plus two things the
`python` executable gives the app when it is not frozen, since `sys.executable` is then this
program:

- multiprocessing's spawned children (the UI and webhook benchmarks start processes);
- `-m MODULE` for the app's own modules: doctor checks Qt by running
  `sys.executable -m app.ui.qt_probe` in a child process, because Qt aborts a process that cannot
  reach a display.
"""

from __future__ import annotations

import multiprocessing
import runpy
import sys


def main() -> int:
    multiprocessing.freeze_support()
    if len(sys.argv) >= 3 and sys.argv[1] == "-m" and sys.argv[2].startswith("app."):
        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    from app.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
