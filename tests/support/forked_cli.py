"""`switchboard` commands in processes of their own, without paying the imports each time.

Starting the command line costs about three seconds on the CI machines, nearly all of it
importing (SQLAlchemy's mappers, polars, the providers); the commands themselves take a
fraction of that. A zygote process imports the app once; each command is then a child forked
from it, with the command's own environment, working folder, standard input, output and error,
arguments and exit status: what `switchboard ARGS` would be, from the point where the imports
are done. The command-line tests that start long-lived processes (serve, crash tests) still
start `switchboard` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ZYGOTE = r"""
import json, logging, os, sys, time, traceback

import app.cli
import app.services  # the imports every command needs: paid once, here

requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
quiet = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1):
    os.dup2(quiet, fd)


def child(request):
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for fd, (path, flags) in enumerate(
        (
            (request["stdin"], os.O_RDONLY),
            (request["stdout"], os.O_WRONLY | os.O_TRUNC),
            (request["stderr"], os.O_WRONLY | os.O_TRUNC),
        )
    ):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    requests.close()
    answers.close()
    sys.stdin = open(0, "r", encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.argv = ["switchboard", *request["args"]]
    code = 1
    try:
        code = app.cli.main(request["args"])
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


for line in requests:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline = time.monotonic() + request["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            answer = {"code": os.waitstatus_to_exitcode(status)}
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            answer = {"timeout": True}
            break
        time.sleep(0.005)
    answers.write(json.dumps(answer) + "\n")
    answers.flush()
"""


class ForkedCli:
    """One zygote per test process; `run` answers as `subprocess.run` would."""

    def __init__(self) -> None:
        self._zygote: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            environment = {**os.environ, "PYTHONPATH": str(ROOT)}
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=environment,
                cwd=ROOT,
            )
        return self._zygote

    def run(
        self,
        args: list[str],
        *,
        env: Mapping[str, str],
        stdin: str = "",
        timeout: float = 120,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        zygote = self._start()
        assert zygote.stdin is not None
        assert zygote.stdout is not None
        with tempfile.TemporaryDirectory(prefix="switchboard-cli-") as folder:
            files = {name: Path(folder) / name for name in ("stdin", "stdout", "stderr")}
            files["stdin"].write_text(stdin, encoding="utf-8")
            files["stdout"].touch()
            files["stderr"].touch()
            request = {
                "args": args,
                "env": dict(env),
                "cwd": str(cwd),
                "timeout": timeout,
                **{name: str(path) for name, path in files.items()},
            }
            zygote.stdin.write(json.dumps(request) + "\n")
            zygote.stdin.flush()
            answer = json.loads(zygote.stdout.readline())
            if answer.get("timeout"):
                raise subprocess.TimeoutExpired(["switchboard", *args], timeout)
            return subprocess.CompletedProcess(
                ["switchboard", *args],
                answer["code"],
                files["stdout"].read_text(encoding="utf-8"),
                files["stderr"].read_text(encoding="utf-8"),
            )

    def close(self) -> None:
        if self._zygote is not None:
            if self._zygote.stdin is not None:
                self._zygote.stdin.close()
            try:
                self._zygote.wait(10)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
            self._zygote = None
