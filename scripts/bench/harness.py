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
         (done_max_ms). With --expect-migrated, checks that exactly N instances applied
         migrations ("Applying " in their log). Then stops every process group.
  report RESULTS
         Prints the table (median and min) and the ratios.
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


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid, reaped, timeout=15.0):
    """SIGTERM the process group, SIGKILL it after `timeout`, and wait until it is empty.

    `reaped()` reaps the direct child without blocking and says whether it is gone: until
    then it stays in the group as a zombie. Its orphaned children (gunicorn's workers)
    are reaped by init."""
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
    res["ran"] = len(re.findall(r"skipped=false", text))
    res["skipped"] = len(re.findall(r"skipped=true", text))
    return res


def tail(path, n=25):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def cmd_ready(argv):
    head, cmd = split_cmd(argv)
    o = options(head, {"sock", "log", "tag", "out", "timeout", "expect-ran", "expect-skipped",
                       "answer"})
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
    ready = exec_at = None
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
        answered = first_answer(o["answer"], deadline) if "answer" in o else None
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
    parsed = parse_log(o["log"])
    for key in ("done_ms", "prepare_ms", "setup_ms"):
        if key in parsed:
            record(out, tag, key, parsed[key])
    for key, want in (("ran", o.get("expect-ran")), ("skipped", o.get("expect-skipped"))):
        if want is not None and parsed[key] != int(want):
            raise SystemExit("harness: %s: expected %s steps %s, the log shows %d\n%s"
                             % (tag, want, key, parsed[key], tail(o["log"])))


def first_answer(address, deadline):
    """The time the first HTTP 200 for GET /healthz came from ADDRESS (host:port)."""
    host, port = address.rsplit(":", 1)
    request = b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n"
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
        raise SystemExit("harness: GET /healthz answered %r" % head[:40])
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
    ready = {}
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
                    if i not in ready and "READY=1" in msg.decode(errors="replace").split("\n"):
                        ready[i] = time.monotonic()
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
    done = [parse_log(l).get("done_ms") for l in logs]
    if all(d is not None for d in done):
        record(out, tag, "done_max_ms", max(done))
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

    rows = [
        ("Start-up (ms)", None, None),
        ("1  launcher cold: launch -> READY=1", "cold.ready_ms", ms),
        ("     launch -> exec (harness clock)", "cold.exec_ms", ms),
        ("     launcher done in (its log)", "cold.done_ms", ms),
        ("     prepare phase (3 steps in 1 Python)", "cold.prepare_ms", ms),
        ("     Django start inside the driver", "cold.setup_ms", ms),
        ("     gunicorn exec -> READY=1", "cold.server_ms", ms),
        ("2  launcher warm: launch -> READY=1", "warm.ready_ms", ms),
        ("     launch -> exec (harness clock)", "warm.exec_ms", ms),
        ("     launcher done in (its log)", "warm.done_ms", ms),
        ("     prepare phase (3 skipped; log has whole ms)", "warm.prepare_ms", ms),
        ("     gunicorn exec -> READY=1", "warm.server_ms", ms),
        ("   launcher --force-prepare: launch -> READY=1", "forced.ready_ms", ms),
        ("     prepare phase (3 steps, nothing to do)", "forced.prepare_ms", ms),
        ("2b READY=1 -> first HTTP 200, gunicorn --preload, READY from", None, None),
        ("     the arbiter (server.ready = \"arbiter\", default)", "ready_arbiter.answer_ms", ms),
        ("     the first worker (server.ready = \"worker\")", "ready_worker.answer_ms", ms),
        ("     launch -> READY=1, arbiter", "ready_arbiter.ready_ms", ms),
        ("     launch -> READY=1, worker", "ready_worker.ready_ms", ms),
        ("   the same without --preload: READY=1 -> first 200, arbiter", "ready_arbiter_lazy.answer_ms", ms),
        ("     READY=1 -> first 200, worker", "ready_worker_lazy.answer_ms", ms),
        ("3  shell preStart, fresh (3 x manage.py)", "shell_fresh.wall_ms", ms),
        ("   shell preStart, nothing to do", "shell_noop.wall_ms", ms),
        ("4  bitpoll-launcher check (0 errors)", "check.wall_ms", ms),
        ("   python -c 'import django; django.setup()'", "django_setup.wall_ms", ms),
        ("   python -c pass (interpreter alone)", "python_bare.wall_ms", ms),
        ("Instances on one PostgreSQL database: launch of all -> every READY=1 (ms)", None, None),
        ("6  N=1, fresh database and data directories", "pg1_fresh.all_ready_ms", ms),
        ("   N=2, fresh", "pg2_fresh.all_ready_ms", ms),
        ("   N=4, fresh", "pg4_fresh.all_ready_ms", ms),
        ("   N=1, warm (nothing to do)", "pg1_warm.all_ready_ms", ms),
        ("   N=2, warm", "pg2_warm.all_ready_ms", ms),
        ("   N=4, warm", "pg4_warm.all_ready_ms", ms),
        ("     N=1, warm: launcher done in (its log)", "pg1_warm.done_max_ms", ms),
        ("     N=4, warm: slowest launcher done in", "pg4_warm.done_max_ms", ms),
        ("Memory (MiB)", None, None),
        ("5  launcher `unit`: binary baseline (ru_maxrss)", "mem_unit.ru_maxrss_kib", mib),
        ("   launcher `run` warm, server /bin/true (ru_maxrss)", "mem_warm.ru_maxrss_kib", mib),
        ("   launcher `run` cold: VmHWM just before exec", "mem_cold.launcher_hwm_kib", mib),
        ("   launcher `run` cold: largest VmRSS sampled", "mem_cold.launcher_rss_max_kib", mib),
        ("   launcher `check`: VmHWM just before exit", "mem_check.launcher_hwm_kib", mib),
        ("   Python preparation child: VmHWM", "mem_cold.child_hwm_kib", mib),
        ("   Python check probe child: VmHWM", "mem_check.child_hwm_kib", mib),
        ("   the exec'd server (/bin/sleep): VmHWM", "mem_cold.exec_hwm_kib", mib),
        ("   cold `run`, wait4 ru_maxrss (= largest process)", "mem_cold.ru_maxrss_kib", mib),
        ("   `check`, wait4 ru_maxrss (= largest process)", "mem_check.ru_maxrss_kib", mib),
        ("   shell preStart: largest manage.py (ru_maxrss)", "shell_fresh.maxrss_kib", mib),
        ("   python django.setup() (ru_maxrss)", "django_setup.maxrss_kib", mib),
        ("   gunicorn master VmRSS at READY=1", "warm.server_rss_kib", mib),
        ("Other", None, None),
        ("   sd_notify datagrams before READY=1, cold", "cold.notify_msgs", count),
        ("   sd_notify datagrams before READY=1, warm", "warm.notify_msgs", count),
        ("   /proc samples of the launcher, cold `run`", "mem_cold.samples", count),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print("%-*s %9s %9s %5s" % (width, "figure", "median", "min", "runs"))
    for label, key, fmt in rows:
        if key is None:
            print("\n" + label)
            continue
        if key not in vals:
            continue
        print("%-*s %9s %9s %5d" % (width, label, fmt(med(key)), fmt(mn(key)), len(vals[key])))

    def ratio(label, a, b, fmt=ms, unit="ms"):
        x, y = med(a), med(b)
        if x is None or y is None or y == 0:
            return
        print("  %-*s %8.1fx   (%s / %s %s)" % (width - 2, label, x / y, fmt(x), fmt(y), unit))

    print("\nRatios (of medians)")
    ratio("cold / warm, launch -> READY=1", "cold.ready_ms", "warm.ready_ms")
    ratio("shell fresh / launcher cold prepare phase", "shell_fresh.wall_ms", "cold.prepare_ms")
    ratio("shell nothing-to-do / --force-prepare phase", "shell_noop.wall_ms", "forced.prepare_ms")
    ratio("shell nothing-to-do / warm launch -> exec", "shell_noop.wall_ms", "warm.exec_ms")
    ratio("check / one Django start", "check.wall_ms", "django_setup.wall_ms")
    for state in ("fresh", "warm"):
        for n in (2, 4):
            ratio("PostgreSQL N=%d / N=1, %s, all ready" % (n, state),
                  "pg%d_%s.all_ready_ms" % (n, state), "pg1_%s.all_ready_ms" % state)
    ratio("Python preparation child / launcher (peak memory)", "mem_cold.child_hwm_kib",
          "mem_cold.launcher_hwm_kib", mib, "MiB")
    for k in ("mem_cold.child_names", "mem_check.child_names", "mem_cold.exec_name"):
        if k in text:
            print("  (%s = %s)" % (k, text[k]))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    # SIGTERM (bench.sh stopped) runs the finally clauses that stop what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sub, argv = sys.argv[1], sys.argv[2:]
    {"ready": cmd_ready, "wall": cmd_wall, "maxrss": cmd_maxrss, "mem": cmd_mem,
     "cluster": cmd_cluster, "report": cmd_report}[sub](argv)


if __name__ == "__main__":
    main()
