"""Run a Python script (or ``-c code``) in this interpreter, as ``python script args`` would, and
write the process's peak resident memory (VmHWM, bytes) to REPORT when it exits.

    python bench/_child.py REPORT classification.py -input_image_path ...
    python bench/_child.py REPORT -c "import torch"

Why: a child's ``ru_maxrss`` from ``wait4`` also counts the memory of the (large) benchmark process
it was forked from before ``exec``; VmHWM of the exec'ed process does not.
"""
import atexit
import os
import runpy
import sys


def _report(path: str) -> None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                with open(path, "w") as out:
                    out.write(str(int(line.split()[1]) * 1024))
                return


def main() -> None:
    report, args = sys.argv[1], sys.argv[2:]
    atexit.register(_report, report)
    if args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        sys.path[0] = ""
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
