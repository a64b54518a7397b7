#!/usr/bin/env python3
"""Runs the seed README's Python example (seed_python_example.py, kept verbatim) against a
ClawSocket server running the echo demo agent and waits for it to print
"Agent: echo: Hello!" (it first prints "Agent: Connected to WebSocket chat server": the
welcome frame is a chat.response too). The example never exits by itself: it is killed
once the answer is printed. Env: CLAWSOCKET_WS. Exit 0 = PASS, 1 = FAIL; 20 s max."""
import os
import subprocess
import sys
import threading

EXPECTED = "Agent: echo: Hello!"
TIMEOUT_S = 20
NAME = "seed Python example"

here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, PYTHONUNBUFFERED="1")
child = subprocess.Popen(
    [sys.executable, os.path.join(here, "seed_python_example.py")],
    cwd=here, env=env, stdin=subprocess.DEVNULL,
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
)
lines = []
found = threading.Event()
errors = []


def read_stdout():
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        if line.rstrip("\n") == EXPECTED:
            found.set()
    found.set()  # EOF: stop waiting


def read_stderr():
    for line in child.stderr:
        errors.append(line.rstrip("\n"))


threading.Thread(target=read_stdout, daemon=True).start()
threading.Thread(target=read_stderr, daemon=True).start()
found.wait(TIMEOUT_S)
exited_early = child.poll() is not None
child.kill()
child.wait(5)

ok = EXPECTED in lines
if ok:
    why = f'printed "{EXPECTED}"'
    if "Agent: Connected to WebSocket chat server" not in lines:
        ok, why = False, 'no welcome frame (chat.response "Connected to WebSocket chat server")'
elif exited_early:
    why = f"the example exited early (code {child.returncode})"
else:
    why = f'"{EXPECTED}" not printed within {TIMEOUT_S} s'
if not ok:
    print("--- example stdout ---\n" + "\n".join(lines) + "\n--- example stderr ---\n" + "\n".join(errors),
          file=sys.stderr)
print(f"{'PASS' if ok else 'FAIL'} {NAME}: {why}")
sys.exit(0 if ok else 1)
