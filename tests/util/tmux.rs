//! An admin's root shell on a real terminal: `bash -i` in a tmux pane of a tmux server
//! of the test's own (its own socket, no config file), typed into with send-keys and read
//! with capture-pane. Dropping it kills the server and everything in the pane.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Tmux {
    socket: String,
    /// Where the shell writes `stty -g` and other small answers.
    scratch: PathBuf,
    sentinels: usize,
}

impl Tmux {
    /// A root `bash -i` with a clean environment (`PATH`, `LANG`, `TERM`, `HOME`) in a
    /// pane of `cols` x 50, in directory `cwd`.
    pub fn start(cwd: &std::path::Path, path: &str) -> Tmux {
        assert!(
            Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "tmux is missing: apt-get install tmux (scripts/test.sh installs it)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let socket = format!("blt-tty-{}-{n}", std::process::id());
        let scratch = cwd.join(format!("tmux-{n}"));
        std::fs::create_dir_all(&scratch).expect("create the tmux scratch dir");
        let shell = format!(
            "env -i PATH={path} LANG=C.UTF-8 TERM=xterm HOME=/root PS1='root-shell$ ' bash --norc --noprofile -i"
        );
        let out = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg("-c")
            .arg(cwd)
            .arg(&shell)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Tmux {
            socket,
            scratch,
            sentinels: 0,
        };
        t.wait_for("root-shell$", Duration::from_secs(20));
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Type `line` and Enter, as a person would.
    pub fn type_line(&self, line: &str) {
        let out = self.tmux(&["send-keys", "-t", "0", "-l", line]);
        assert!(out.status.success(), "send-keys: {out:?}");
        let out = self.tmux(&["send-keys", "-t", "0", "Enter"]);
        assert!(out.status.success(), "send-keys Enter: {out:?}");
    }

    /// Press a key by tmux's name for it (`C-c`, `C-d`).
    pub fn key(&self, key: &str) {
        let out = self.tmux(&["send-keys", "-t", "0", key]);
        assert!(out.status.success(), "send-keys {key}: {out:?}");
    }

    /// Paste `data` into the pane as one burst, as a terminal's paste does.
    pub fn paste(&self, data: &[u8]) {
        let file = self.scratch.join("paste");
        std::fs::write(&file, data).expect("write the paste buffer");
        let out = self.tmux(&["load-buffer", "-b", "blt", file.to_str().unwrap()]);
        assert!(out.status.success(), "load-buffer: {out:?}");
        let out = self.tmux(&["paste-buffer", "-r", "-d", "-b", "blt", "-t", "0"]);
        assert!(out.status.success(), "paste-buffer: {out:?}");
    }

    /// The pane's text with its scroll-back.
    pub fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-5000", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the pane shows `needle`; the screen, or a panic with it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("the terminal did not show {needle:?} within {timeout:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until a line of the pane starts with `prefix` (output, not the typed
    /// command, which starts with the prompt); the rest of that line.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if let Some(rest) = screen.lines().find_map(|l| l.strip_prefix(prefix)) {
                return rest.trim().to_string();
            }
            if Instant::now() >= deadline {
                panic!(
                    "the terminal showed no line starting {prefix:?} within {timeout:?}:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `line` followed by a marker, and wait until the shell has run both and is
    /// back at its prompt: anything pushed into the terminal's input meanwhile has been
    /// read (and run) by the shell by then. Returns the command's exit status.
    pub fn run(&mut self, line: &str, timeout: Duration) -> i32 {
        self.sentinels += 1;
        let mark = format!("blt-done-{}=", self.sentinels);
        self.type_line(&format!("{line}; echo \"{mark}$?\""));
        let status = self.wait_for_line(&mark, timeout).parse().unwrap_or(-1);
        self.settle();
        status
    }

    /// Type a marker line and wait for its output: whatever was queued on the terminal's
    /// input before it has been read by the shell.
    pub fn settle(&mut self) {
        self.sentinels += 1;
        let mark = format!("blt-settled-{}.", self.sentinels);
        self.type_line(&format!("echo {mark}"));
        self.wait_for_line(&mark, Duration::from_secs(20));
    }

    /// `stty -g` of the pane's terminal, read through the shell.
    pub fn stty(&mut self) -> String {
        let file = self.scratch.join("stty");
        let _ = std::fs::remove_file(&file);
        self.run(
            &format!("stty -g > {}", file.display()),
            Duration::from_secs(20),
        );
        std::fs::read_to_string(&file)
            .expect("stty's answer")
            .trim()
            .to_string()
    }

    /// The pane's terminal device (/dev/pts/N).
    pub fn tty(&self) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", "0", "#{pane_tty}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The PID of the pane's shell.
    pub fn shell_pid(&self) -> u32 {
        let out = self.tmux(&["display-message", "-p", "-t", "0", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pane_pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
