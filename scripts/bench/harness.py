#!/usr/bin/python3
"""Measurement helper for scripts/bench.sh (run by /usr/bin/python3, standard library only).

Subcommands (each appends "tag.key<TAB>value" lines to the results file given by --out):

  ready  --sock PATH --log FILE --tag T [--expect-ran N] [--expect-skipped N]
         [--answer HOST:PORT] -- CMD...
         Binds an AF_UNIX datagram socket at PATH, starts CMD in a new session with
         NOTIFY_SOCKET=PATH, and waits for READY=1. Records launch->READY (ready_ms),
         launch->"STATUS=Starting the server" (exec_ms, sent by the launcher right before
         exec), the launcher's own figures parsed from its log (done_ms: "launcher done in
         N ms"; prepare_ms: the prepare phase's duration_ms; setup_ms: "Django started in")
         and the server's VmRSS at READY. With --answer, sends GET /healthz to HOST:PORT
         the moment READY=1 arrives (a new connection, retried while refused) and records
         how long after READY=1 the first HTTP 200 came (answer_ms): how long a client
         that trusted READY=1 waits. Then stops the process group (SIGTERM, SIGKILL after
         15 s) and waits until it is gone.
         With --cpu 1, also records the CPU time (user + system, ms) of the whole process
         tree at READY=1 (cpu_ms, see tree_cpu_ms).
  serve  --log FILE --tag T --answer HOST:PORT [--answer-path P] [--answer-host H]
         [--sock PATH] [--expect-ran N] -- CMD...
         Starts CMD in a new session and, from that moment, sends GET P (default /) to
         HOST:PORT until an HTTP 200 comes (a refused connection is retried every 2 ms; a
         connection that is accepted waits for the answer). Records launch -> first HTTP
         200 (first200_ms), the CPU time of the process tree then (cpu_ms), and with
         --sock launch -> READY=1 (ready_ms) if it came by then; also the launcher's
         figures from its log as `ready` does. For any command: the launcher, or a shell
         preStart that ends in `exec gunicorn`.
  wall   --log FILE --tag T [--ok 0,1] -- CMD...
         Wall-clock time of CMD (ms) and its ru_maxrss (KiB, the largest process of the
         tree: wait4 folds in the reaped descendants; never below this harness's own RSS,
         ~12 MiB, which the forked child starts with).
  maxrss --log FILE --tag T [--ok 0,1] -- CMD...
         ru_maxrss of CMD (KiB) through /usr/bin/time, whose small size keeps the figure
         exact for a command without children (a forked child's high-water mark starts
         at its parent's RSS, and it survives exec).
  mem    --log FILE --tag T [--sock PATH] [--linger S] [--ok 0,1] -- CMD...
         Samples /proc/PID/status of CMD every millisecond: VmHWM/VmRSS of the launcher for
         as long as the process still is the launcher image (until it execs or exits), the
         largest VmHWM of its children (the Python preparation or probe), and after an exec
         the new image's VmHWM (shows that VmHWM is per image and resets at exec). Also
         records wait4's ru_maxrss of the whole run, which does NOT reset at exec and
         includes reaped children, for comparison. The notify socket (--sock) is drained:
         the launcher's sd_notify blocks once its receive queue is full.
  cluster --out F --tag T --logs DIR [--expect-migrated N] -- LAUNCHER CONFIG...
         Starts one `LAUNCHER run --config CONFIG` per config at once (N instances of one
         deployment on one database), each in a new session with a notify socket of its
         own, and waits until every one sent READY=1. Records launch -> all READY=1
         (all_ready_ms), -> the first (first_ready_ms), and the largest "launcher done in"
         (done_max_ms); the CPU time of every instance's process tree at its READY=1,
         summed (cpu_ms); of each launcher alone, sampled at its "STATUS=Starting the
         server" right before its exec, summed (launcher_cpu_ms); and for the instances that
         waited for another's migration lock, their wait (wait_ms, summed, from the log's
         "waited N s") and their launchers' CPU time (wait_cpu_ms, summed). With
         --expect-migrated, checks that exactly N instances applied migrations ("Applying "
         in their log). Then stops every process group.
  report RESULTS
         Prints the table (median and min) and the ratios.

CPU times come from /proc/PID/stat (clock ticks, 10 ms): see tree_cpu_ms.
"""
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

LAUNCHER_COMM = "bitpoll-launche"  # comm is truncated to 15 characters


def record(out, tag, key, value):
    with open(out, "a") as f:
        f.write("%s.%s\t%s\n" % (tag, key, value))


def split_cmd(argv):
    if "--" not in argv:
        sys.exit("harness: missing -- before the command")
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def options(argv, names):
    opts = {}
    it = iter(argv)
    for a in it:
        if not a.startswith("--") or a[2:] not in names:
            sys.exit("harness: unknown option %s" % a)
        opts[a[2:]] = next(it)
    return opts


def proc_status(pid):
    """Name, VmHWM and VmRSS (KiB) of a process, or None when it is gone or a zombie."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    if "VmHWM" not in fields:
        return None
    return {
        "name": fields.get("Name", ""),
        "hwm": int(fields["VmHWM"].split()[0]),
        "rss": int(fields["VmRSS"].split()[0]),
    }


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def all_children(pid):
    """Children of every thread of `pid`."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ticks(pid):
    """(utime + stime, cutime + cstime) of `pid` in clock ticks, or None when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is the state (field 3): utime is field 14, stime 15, cutime 16, cstime 17.
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree_cpu_ms(root):
    """CPU time (user + system, ms) of `root` and everything it started, now: for each
    live process of the tree its own time plus that of its descendants it has reaped
    (which includes theirs). Only a process reaped outside the tree would be missed; the
    launcher reaps its preparation process, which reaps its lanes and their children."""
    total = 0
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        t = cpu_ticks(pid)
        if t is None:
            continue
        total += t[0] + t[1]
        stack.extend(all_children(pid))
    return total * TICK_MS


def self_cpu_ms(pid):
    t = cpu_ticks(pid)
    return None if t is None else t[0] * TICK_MS


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid, reaped, timeout=15.0, settle=0.3):
    """SIGTERM the process group, SIGKILL it after `timeout`, and wait until it is empty.

    First `settle` seconds pass: gunicorn sent SIGTERM while it is still forking its
    workers can leave the last one running until its graceful timeout (30 s).

    `reaped()` reaps the direct child without blocking and says whether it is gone: until
    then it stays in the group as a zombie. Its orphaned children (gunicorn's workers)
    are reaped by init."""
    if not reaped():
        time.sleep(settle)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reaped() and not group_alive(pgid):
            return
        time.sleep(0.02)
    sys.stderr.write("harness: process group %d still there %.0f s after SIGTERM, killing it\n"
                     % (pgid, timeout))
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if reaped() and not group_alive(pgid):
            return
        time.sleep(0.02)
    sys.stderr.write("harness: process group %d did not go away\n" % pgid)


def reap(pid):
    """Wait for pid; returns (status, ru_maxrss KiB)."""
    _, status, ru = os.wait4(pid, 0)
    return status, ru.ru_maxrss


def parse_log(path):
    text = open(path, errors="replace").read()
    res = {}
    m = re.search(r"launcher done in (\d+) ms", text)
    if m:
        res["done_ms"] = int(m.group(1))
    for line in text.splitlines():
        if 'phase="prepare"' in line and "duration_ms=" in line and "step=" not in line:
            res["prepare_ms"] = int(re.search(r"duration_ms=(\d+)", line).group(1))
        m = re.search(r"Django started in (\d+) ms", line)
        if m:
            res["setup_ms"] = int(m.group(1))
    for step, ms in re.findall(r"step (\w+) finished in (\d+) ms", text):
        res["step_%s_ms" % step] = int(ms)
    m = re.search(r"waited [0-9.]+ s for .* duration_ms=(\d+)", text)
    if m:
        res["wait_ms"] = int(m.group(1))
    res["ran"] = len(re.findall(r"skipped=false", text))
    res["skipped"] = len(re.findall(r"skipped=true", text))
    return res


LOG_KEYS = ("done_ms", "prepare_ms", "setup_ms", "step_migrate_ms", "step_collectstatic_ms",
            "step_compilemessages_ms")


def record_log(out, tag, path, expect_ran=None, expect_skipped=None):
    parsed = parse_log(path)
    for key in LOG_KEYS:
        if key in parsed:
            record(out, tag, key, parsed[key])
    for key, want in (("ran", expect_ran), ("skipped", expect_skipped)):
        if want is not None and parsed[key] != int(want):
            raise SystemExit("harness: %s: expected %s steps %s, the log shows %d\n%s"
                             % (tag, want, key, parsed[key], tail(path)))


def tail(path, n=25):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def cmd_ready(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"sock", "log", "tag", "out", "timeout", "expect-ran", "expect-skipped",
                       "answer", "answer-path", "answer-host", "cpu"})
    timeout = float(o.get("timeout", "120"))
    sock_path = o["sock"]
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    os.chmod(sock_path, 0o666)  # the server sends READY=1 as the service user
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    log = open(o["log"], "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    ready = exec_at = cpu = None
    rss = None
    msgs = 0
    deadline = t0 + timeout
    s.settimeout(0.05)
    try:
        while ready is None:
            now = time.monotonic()
            if now > deadline:
                raise SystemExit("harness: no READY=1 within %.0f s\n%s" % (timeout, tail(o["log"])))
            try:
                msg = s.recv(4096)
            except socket.timeout:
                if p.poll() is not None:
                    raise SystemExit("harness: %s exited with %s before READY=1\n%s"
                                     % (cmd[0], p.returncode, tail(o["log"])))
                continue
            at = time.monotonic()
            msgs += 1
            lines = msg.decode(errors="replace").split("\n")
            if "STATUS=Starting the server" in lines and exec_at is None:
                exec_at = at
            if "READY=1" in lines:
                ready = at
                cpu = tree_cpu_ms(p.pid) if "cpu" in o else None
        answered = (first_answer(o["answer"], deadline, o.get("answer-path", "/healthz"),
                                 o.get("answer-host", "localhost"))
                    if "answer" in o else None)
        st = proc_status(p.pid)
        rss = st["rss"] if st else None
    finally:
        stop_group(p.pid, lambda: p.poll() is not None)
        s.close()
        os.unlink(sock_path)
        log.close()
    out, tag = o["out"], o["tag"]
    record(out, tag, "ready_ms", "%.1f" % ((ready - t0) * 1000))
    record(out, tag, "notify_msgs", msgs)
    if exec_at is not None:
        record(out, tag, "exec_ms", "%.1f" % ((exec_at - t0) * 1000))
        record(out, tag, "server_ms", "%.1f" % ((ready - exec_at) * 1000))
    if rss is not None:
        record(out, tag, "server_rss_kib", rss)
    if answered is not None:
        record(out, tag, "answer_ms", "%.1f" % ((answered - ready) * 1000))
        record(out, tag, "first200_ms", "%.1f" % ((answered - t0) * 1000))
    if "cpu" in o:
        record(out, tag, "cpu_ms", "%.0f" % cpu)
    record_log(out, tag, o["log"], o.get("expect-ran"), o.get("expect-skipped"))


def cmd_serve(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"sock", "log", "tag", "out", "timeout", "expect-ran", "expect-skipped",
                       "answer", "answer-path", "answer-host"})
    timeout = float(o.get("timeout", "180"))
    s = None
    env = dict(os.environ)
    if "sock" in o:
        if os.path.exists(o["sock"]):
            os.unlink(o["sock"])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(o["sock"])
        os.chmod(o["sock"], 0o666)
        s.setblocking(False)
        env["NOTIFY_SOCKET"] = o["sock"]
    log = open(o["log"], "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    deadline = t0 + timeout
    ready = None

    def drain():
        nonlocal ready
        if s is None:
            return
        try:
            while True:
                msg = s.recv(4096)
                if ready is None and "READY=1" in msg.decode(errors="replace").split("\n"):
                    ready = time.monotonic()
        except BlockingIOError:
            pass

    host, port = o["answer"].rsplit(":", 1)
    request = ("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n"
               % (o.get("answer-path", "/"), o.get("answer-host", "localhost"))).encode()
    answered = cpu = None
    try:
        while answered is None:
            if time.monotonic() > deadline:
                raise SystemExit("harness: %s: no HTTP 200 within %.0f s\n%s"
                                 % (o["tag"], timeout, tail(o["log"])))
            if p.poll() is not None:
                raise SystemExit("harness: %s: %s exited with %s before an HTTP 200\n%s"
                                 % (o["tag"], cmd[0], p.returncode, tail(o["log"])))
            drain()
            try:
                with socket.create_connection((host, int(port)), timeout=60) as c:
                    c.sendall(request)
                    head_bytes = c.recv(64)
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.002)
                continue
            if head_bytes.startswith(b"HTTP/1.") and head_bytes.split(b" ")[1] == b"200":
                answered = time.monotonic()
                cpu = tree_cpu_ms(p.pid)
            else:
                raise SystemExit("harness: %s: GET answered %r\n%s"
                                 % (o["tag"], head_bytes[:40], tail(o["log"])))
        drain()
    finally:
        stop_group(p.pid, lambda: p.poll() is not None)
        log.close()
        if s is not None:
            s.close()
            os.unlink(o["sock"])
    out, tag = o["out"], o["tag"]
    record(out, tag, "first200_ms", "%.1f" % ((answered - t0) * 1000))
    record(out, tag, "cpu_ms", "%.0f" % cpu)
    if ready is not None:
        record(out, tag, "ready_ms", "%.1f" % ((ready - t0) * 1000))
    record_log(out, tag, o["log"], o.get("expect-ran"), o.get("expect-skipped"))


def first_answer(address, deadline, path="/healthz", host_header="localhost"):
    """The time the first HTTP 200 for GET PATH came from ADDRESS (host:port)."""
    host, port = address.rsplit(":", 1)
    request = ("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host_header)).encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=30) as c:
                c.sendall(request)
                head = c.recv(64)
        except ConnectionRefusedError:
            time.sleep(0.001)
            continue
        if head.startswith(b"HTTP/1.") and head.split(b" ")[1] == b"200":
            return time.monotonic()
        raise SystemExit("harness: GET %s answered %r" % (path, head[:40]))
    raise SystemExit("harness: no HTTP 200 from %s" % address)


def cmd_wall(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"log", "tag", "out", "ok"})
    ok = [int(c) for c in o.get("ok", "0").split(",")]
    with open(o["log"], "w") as log:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        try:
            status, maxrss = reap(p.pid)
        except BaseException:
            stop_group(p.pid, lambda: p.poll() is not None)
            raise
        elapsed = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in ok:
        raise SystemExit("harness: %s: %s exited with %d\n%s"
                         % (o["tag"], cmd[0], p.returncode, tail(o["log"])))
    record(o["out"], o["tag"], "wall_ms", "%.1f" % (elapsed * 1000))
    record(o["out"], o["tag"], "maxrss_kib", maxrss)


def cmd_maxrss(argv):
    """ru_maxrss of CMD measured by /usr/bin/time, a small C program: the forked child's
    high-water mark starts at the forking parent's RSS and survives exec, so a Python
    parent would add its own ~12 MiB to the figure."""
    head, cmd = split_cmd(argv)
    o = options(head, {"log", "tag", "out", "ok"})
    ok = [int(c) for c in o.get("ok", "0").split(",")]
    rss_file = o["log"] + ".maxrss"
    with open(o["log"], "w") as log:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file, "--"] + cmd,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    if p.returncode not in ok:
        raise SystemExit("harness: %s: %s exited with %d\n%s"
                         % (o["tag"], cmd[0], p.returncode, tail(o["log"])))
    with open(rss_file) as f:
        kib = int(f.read().split()[-1])
    os.unlink(rss_file)
    record(o["out"], o["tag"], "ru_maxrss_kib", kib)


def cmd_mem(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"log", "tag", "out", "sock", "linger", "ok"})
    ok = [int(c) for c in o.get("ok", "0").split(",")]
    linger = float(o.get("linger", "0.3"))
    env = dict(os.environ)
    s = None
    if "sock" in o:
        # A notify socket that is read (drained) but not timed. It must be read: the
        # launcher's sd_notify blocks once the receive queue is full.
        if os.path.exists(o["sock"]):
            os.unlink(o["sock"])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(o["sock"])
        os.chmod(o["sock"], 0o666)
        s.setblocking(False)
        env["NOTIFY_SOCKET"] = o["sock"]
    log = open(o["log"], "w")
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    pid = p.pid
    launcher_hwm = launcher_rss_max = samples = 0
    child_hwm, child_name = {}, {}
    after_exec = exec_seen_at = None
    got = {}

    def reaped():
        if "status" not in got:
            done, st_raw, ru = os.wait4(pid, os.WNOHANG)
            if done:
                got["status"], got["maxrss"] = st_raw, ru.ru_maxrss
        return "status" in got

    try:
        n = 0
        while not reaped():
            if s is not None:
                try:
                    while True:
                        s.recv(4096)
                except BlockingIOError:
                    pass
            st = proc_status(pid)
            if st is not None:
                if st["name"] == LAUNCHER_COMM and exec_seen_at is None:
                    launcher_hwm = max(launcher_hwm, st["hwm"])
                    launcher_rss_max = max(launcher_rss_max, st["rss"])
                    samples += 1
                elif samples:
                    # Another image after the launcher: it executed the server. (Before
                    # the first launcher sample the child may still show the harness.)
                    if exec_seen_at is None:
                        exec_seen_at = time.monotonic()
                    after_exec = st
                    if time.monotonic() - exec_seen_at > linger:
                        break
            if exec_seen_at is None:
                # New children are looked for every 10th round, known ones every round.
                pids = children(pid) if n % 10 == 0 else list(child_hwm)
                for c in pids:
                    cst = proc_status(c)
                    if cst is not None and cst["name"] != LAUNCHER_COMM:
                        child_hwm[c] = max(child_hwm.get(c, 0), cst["hwm"])
                        child_name[c] = cst["name"]
            n += 1
            time.sleep(0.001)
    finally:
        stop_group(pid, reaped)
        if not reaped():
            _, st_raw, ru = os.wait4(pid, 0)
            got["status"], got["maxrss"] = st_raw, ru.ru_maxrss
        log.close()
        if s is not None:
            s.close()
            os.unlink(o["sock"])
    status, maxrss = got["status"], got["maxrss"]
    code = p.returncode = os.waitstatus_to_exitcode(status)
    if after_exec is None and code not in ok:
        raise SystemExit("harness: %s: %s exited with %d\n%s" % (o["tag"], cmd[0], code, tail(o["log"])))
    out, tag = o["out"], o["tag"]
    record(out, tag, "launcher_hwm_kib", launcher_hwm)
    record(out, tag, "launcher_rss_max_kib", launcher_rss_max)
    record(out, tag, "samples", samples)
    if child_hwm:
        record(out, tag, "child_hwm_kib", max(child_hwm.values()))
        record(out, tag, "child_names", ",".join(sorted(set(child_name.values()))))
    if after_exec is not None:
        record(out, tag, "exec_name", after_exec["name"])
        record(out, tag, "exec_hwm_kib", after_exec["hwm"])
    record(out, tag, "ru_maxrss_kib", maxrss)


def cmd_cluster(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"out", "tag", "logs", "timeout", "expect-migrated"})
    timeout = float(o.get("timeout", "180"))
    launcher, configs = cmd[0], cmd[1:]
    socks, procs, logs = [], [], []
    ready, cpu, launcher_cpu = {}, {}, {}
    t0 = time.monotonic()
    try:
        for i, config in enumerate(configs):
            path = os.path.join(o["logs"], "%s-notify-%d.sock" % (o["tag"], i))
            if os.path.exists(path):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(path)
            os.chmod(path, 0o666)  # the server sends READY=1 as the service user
            s.setblocking(False)
            socks.append((s, path))
        t0 = time.monotonic()
        for i, config in enumerate(configs):
            log_path = os.path.join(o["logs"], "%s-%d.log" % (o["tag"], i))
            log = open(log_path, "w")
            logs.append(log_path)
            env = dict(os.environ, NOTIFY_SOCKET=socks[i][1])
            procs.append(subprocess.Popen([launcher, "run", "--config", config], env=env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True))
            log.close()
        deadline = t0 + timeout
        while len(ready) < len(configs):
            if time.monotonic() > deadline:
                raise SystemExit("harness: %s: only %d of %d ready within %.0f s"
                                 % (o["tag"], len(ready), len(configs), timeout))
            for i, (s, _) in enumerate(socks):
                while True:
                    try:
                        msg = s.recv(4096)
                    except BlockingIOError:
                        break
                    lines = msg.decode(errors="replace").split("\n")
                    if i not in launcher_cpu and "STATUS=Starting the server" in lines:
                        launcher_cpu[i] = self_cpu_ms(procs[i].pid)
                    if i not in ready and "READY=1" in lines:
                        ready[i] = time.monotonic()
                        cpu[i] = tree_cpu_ms(procs[i].pid)
                if i not in ready and procs[i].poll() is not None:
                    raise SystemExit("harness: %s: instance %d exited with %s before READY=1\n%s"
                                     % (o["tag"], i, procs[i].returncode, tail(logs[i])))
            time.sleep(0.005)
    finally:
        for p in procs:
            stop_group(p.pid, lambda p=p: p.poll() is not None)
        for s, path in socks:
            s.close()
            os.unlink(path)
    out, tag = o["out"], o["tag"]
    record(out, tag, "all_ready_ms", "%.1f" % ((max(ready.values()) - t0) * 1000))
    record(out, tag, "first_ready_ms", "%.1f" % ((min(ready.values()) - t0) * 1000))
    parsed = [parse_log(l) for l in logs]
    done = [p.get("done_ms") for p in parsed]
    if all(d is not None for d in done):
        record(out, tag, "done_max_ms", max(done))
    record(out, tag, "cpu_ms", "%.0f" % sum(cpu.values()))
    if len(launcher_cpu) == len(configs) and None not in launcher_cpu.values():
        record(out, tag, "launcher_cpu_ms", "%.0f" % sum(launcher_cpu.values()))
    waiters = [i for i, p in enumerate(parsed) if "wait_ms" in p]
    if waiters:
        record(out, tag, "waiters", len(waiters))
        record(out, tag, "wait_ms", sum(parsed[i]["wait_ms"] for i in waiters))
        if all(launcher_cpu.get(i) is not None for i in waiters):
            record(out, tag, "wait_cpu_ms", "%.0f" % sum(launcher_cpu[i] for i in waiters))
    if "expect-migrated" in o:
        migrated = sum(1 for l in logs if "Applying " in open(l, errors="replace").read())
        if migrated != int(o["expect-migrated"]):
            raise SystemExit("harness: %s: %d instances applied migrations, expected %s"
                             % (tag, migrated, o["expect-migrated"]))


# ---------------------------------------------------------------- report

def load(path):
    vals = {}
    text = {}
    for line in open(path):
        k, _, v = line.rstrip("\n").partition("\t")
        try:
            vals.setdefault(k, []).append(float(v))
        except ValueError:
            text[k] = v
    return vals, text


def cmd_report(argv):
    path = argv[0]
    vals, text = load(path)

    def med(k):
        return statistics.median(vals[k]) if k in vals else None

    def mn(k):
        return min(vals[k]) if k in vals else None

    def ms(v):
        return "-" if v is None else ("%.0f" % v if v >= 10 else "%.1f" % v)

    def mib(v):
        return "-" if v is None else "%.1f" % (v / 1024.0)

    def count(v):
        return "-" if v is None else "%d" % v

    def kilo(v):
        return "-" if v is None else "%.0f" % v

    apps = sorted({k.split("_", 1)[0] for k in vals})

    def rows_of(a):
        x = lambda tag: "%s_%s" % (a, tag)  # noqa: E731
        rows = [
            ("%s: start-up, ms" % a, None, None),
            ("1  cold (fresh data dir): launch -> first HTTP 200", x("cold.first200_ms"), ms),
            ("     launch -> READY=1", x("cold.ready_ms"), ms),
            ("     launcher done in (its log)", x("cold.done_ms"), ms),
            ("     prepare phase (one Django start, steps side by side)", x("cold.prepare_ms"), ms),
            ("       Django start in the driver", x("cold.setup_ms"), ms),
            ("       migrate", x("cold.step_migrate_ms"), ms),
            ("       collectstatic (beside migrate)", x("cold.step_collectstatic_ms"), ms),
            ("       compilemessages (after collectstatic)", x("cold.step_compilemessages_ms"), ms),
            ("     CPU time of the process tree at the first 200", x("cold.cpu_ms"), ms),
            ("   shell preStart (3 x manage.py) + gunicorn, fresh: -> first 200", x("shell_cold.first200_ms"), ms),
            ("     CPU time at the first 200", x("shell_cold.cpu_ms"), ms),
            ("2  warm: launch -> READY=1 (ready = \"answer\")", x("warm.ready_ms"), ms),
            ("     READY=1 -> first HTTP 200", x("warm.answer_ms"), ms),
            ("     launch -> first HTTP 200", x("warm.first200_ms"), ms),
            ("     launcher done in (its log)", x("warm.done_ms"), ms),
            ("     CPU time of the process tree at READY=1", x("warm.cpu_ms"), ms),
            ("   shell preStart, nothing to do, + gunicorn: -> first 200", x("shell_warm.first200_ms"), ms),
            ("   --force-prepare: prepare phase (steps with nothing to do)", x("forced.prepare_ms"), ms),
            ("%s: READY=1 and the first answer (warm), ms" % a, None, None),
            ("   answer (default), --preload: launch -> READY=1", x("warm.ready_ms"), ms),
            ("     READY=1 -> first 200", x("warm.answer_ms"), ms),
            ("   arbiter, --preload: launch -> READY=1", x("ready_arbiter.ready_ms"), ms),
            ("     READY=1 -> first 200", x("ready_arbiter.answer_ms"), ms),
            ("   worker, --preload: launch -> READY=1", x("ready_worker.ready_ms"), ms),
            ("     READY=1 -> first 200", x("ready_worker.answer_ms"), ms),
            ("   answer, no --preload: launch -> READY=1", x("ready_lazy.ready_ms"), ms),
            ("     READY=1 -> first 200", x("ready_lazy.answer_ms"), ms),
            ("   arbiter, no --preload: launch -> READY=1", x("ready_lazy_arbiter.ready_ms"), ms),
            ("     READY=1 -> first 200", x("ready_lazy_arbiter.answer_ms"), ms),
            ("   CPU time of the process tree at READY=1: answer", x("warm.cpu_ms"), ms),
            ("     arbiter", x("ready_arbiter.cpu_ms"), ms),
            ("%s: check, ms" % a, None, None),
            ("4  bitpoll-launcher check (0 errors)", x("check.wall_ms"), ms),
            ("   python -c 'import django; django.setup()'", x("django_setup.wall_ms"), ms),
            ("   python -c pass", x("python_bare.wall_ms"), ms),
            ("%s: memory, MiB" % a, None, None),
            ("5  launcher `run` warm, server /bin/true (ru_maxrss)", x("mem_warm.ru_maxrss_kib"), mib),
            ("   the same: task clock (perf stat, ms)", x("perf_warm.task_clock_ms"), ms),
            ("   the same: instructions up to its exec (callgrind, thousands)", x("callgrind_warm.instructions_k"), kilo),
            ("   launcher `unit` (ru_maxrss)", x("mem_unit.ru_maxrss_kib"), mib),
            ("   launcher `run` cold: VmHWM just before exec", x("mem_cold.launcher_hwm_kib"), mib),
            ("   launcher `run` cold: largest VmRSS sampled", x("mem_cold.launcher_rss_max_kib"), mib),
            ("   launcher `check`: VmHWM just before exit", x("mem_check.launcher_hwm_kib"), mib),
            ("   largest Python child while preparing: VmHWM", x("mem_cold.child_hwm_kib"), mib),
            ("   Python check probe: VmHWM", x("mem_check.child_hwm_kib"), mib),
            ("   gunicorn master at READY=1 (VmRSS)", x("warm.server_rss_kib"), mib),
            ("%s: instances on one PostgreSQL database (launch -> every READY=1; CPU summed)" % a, None, None),
        ]
        for n in (1, 2, 4):
            for state, what in (("fresh", "fresh database and data dirs"),
                                ("newdb", "new database, prepared instances"),
                                ("warm", "nothing to do")):
                k = x("pg%d_%s" % (n, state))
                rows.append(("6  N=%d, %s: wall" % (n, what), k + ".all_ready_ms", ms))
                rows.append(("     CPU time, all processes up to READY=1", k + ".cpu_ms", ms))
                rows.append(("     the launchers alone", k + ".launcher_cpu_ms", ms))
                rows.append(("     instances that waited for the migration lock", k + ".waiters", count))
                rows.append(("     their wait (summed)", k + ".wait_ms", ms))
                rows.append(("     their launchers' CPU time (summed)", k + ".wait_cpu_ms", ms))
        return rows

    width = 70
    print("%-*s %9s %9s %5s" % (width, "figure", "median", "min", "runs"))
    for a in apps:
        for label, key, fmt in rows_of(a):
            if key is None:
                print("\n" + label)
                continue
            if key not in vals:
                continue
            print("%-*s %9s %9s %5d" % (width, label, fmt(med(key)), fmt(mn(key)), len(vals[key])))

    def ratio(label, a, b, unit="ms"):
        x, y = med(a), med(b)
        if x is None or y is None or y == 0:
            return
        xm, ym = mn(a), mn(b)
        print("  %-*s %7.2fx  %7.2fx   (%s / %s %s)" % (width - 2, label, x / y, xm / ym,
                                                       ms(x), ms(y), unit))

    def sum_ratio(label, a, parts):
        """a / sum of (factor, key) parts, of the medians and of the minima."""
        if a not in vals or any(k not in vals for _, k in parts):
            return
        base_med = sum(f * med(k) for f, k in parts)
        base_min = sum(f * mn(k) for f, k in parts)
        if base_med and base_min:
            print("  %-*s %7.2fx  %7.2fx   (%s / %s ms)" % (width - 2, label, med(a) / base_med,
                                                         mn(a) / base_min, ms(med(a)),
                                                         ms(base_med)))

    print("\nRatios: of the medians, of the minima")
    for a in apps:
        x = lambda tag: "%s_%s" % (a, tag)  # noqa: E731
        print(" %s" % a)
        ratio("cold, launch -> first 200: launcher / shell preStart + gunicorn",
              x("cold.first200_ms"), x("shell_cold.first200_ms"))
        ratio("cold, CPU time at the first 200: launcher / shell", x("cold.cpu_ms"),
              x("shell_cold.cpu_ms"))
        ratio("warm, launch -> first 200: launcher / shell (nothing to do)",
              x("warm.first200_ms"), x("shell_warm.first200_ms"))
        ratio("READY=1 -> first 200: arbiter / answer", x("ready_arbiter.answer_ms"),
              x("warm.answer_ms"))
        ratio("launch -> READY=1: answer / arbiter", x("warm.ready_ms"), x("ready_arbiter.ready_ms"))
        ratio("launch -> first 200: answer / arbiter", x("warm.first200_ms"),
              x("ready_arbiter.first200_ms"))
        ratio("check / one Django start", x("check.wall_ms"), x("django_setup.wall_ms"))
        for n in (2, 4):
            sum_ratio("N=%d new database, CPU: / (N=1 new database + %d x N=1 warm)" % (n, n - 1),
                      x("pg%d_newdb.cpu_ms" % n),
                      [(1, x("pg1_newdb.cpu_ms")), (n - 1, x("pg1_warm.cpu_ms"))])
            sum_ratio("N=%d fresh, CPU: / (N=1 fresh + %d x N=1 warm)" % (n, n - 1),
                      x("pg%d_fresh.cpu_ms" % n),
                      [(1, x("pg1_fresh.cpu_ms")), (n - 1, x("pg1_warm.cpu_ms"))])
            sum_ratio("N=%d warm, CPU: / (%d x N=1 warm)" % (n, n), x("pg%d_warm.cpu_ms" % n),
                      [(n, x("pg1_warm.cpu_ms"))])
            for state in ("fresh", "newdb", "warm"):
                ratio("N=%d / N=1, %s, wall to all READY=1" % (n, state),
                      x("pg%d_%s.all_ready_ms" % (n, state)), x("pg1_%s.all_ready_ms" % state))
            ratio("N=%d new database: waiters' launcher CPU per ms waited" % n,
                  x("pg%d_newdb.wait_cpu_ms" % n), x("pg%d_newdb.wait_ms" % n), "ms")
    for k in sorted(text):
        if k.endswith("child_names") or k.endswith("exec_name"):
            print("  (%s = %s)" % (k, text[k]))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    # SIGTERM (bench.sh stopped) runs the finally clauses that stop what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sub, argv = sys.argv[1], sys.argv[2:]
    {"ready": cmd_ready, "serve": cmd_serve, "wall": cmd_wall, "maxrss": cmd_maxrss,
     "mem": cmd_mem, "cluster": cmd_cluster, "report": cmd_report}[sub](argv)


if __name__ == "__main__":
    main()
