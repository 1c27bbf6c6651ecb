//! The real gatehouse binary as a child process, for tests of what only a process shows:
//! signals, exit codes, and the log lines it writes.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The gatehouse binary running a temp config; killed (by its PID) if a test fails midway.
pub struct Process {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    config_path: PathBuf,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(config_text: &str, name: &str) -> Self {
        let config_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.toml", std::process::id()));
        std::fs::write(&config_path, config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout_pipe = child.stdout.take().unwrap();
        let stdout_lines = std::sync::Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                stdout_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            config_path,
            stdout,
        }
    }

    /// Reads log lines until one has `message` (JSON logs); returns its `addr` field.
    pub async fn addr_logged(&mut self, message: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!(
                    "gatehouse exited before logging {message:?}; stderr:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "no {message:?} line in time; stderr:\n{}",
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["message"] == message {
                let addr = json["addr"].as_str().expect("addr field");
                return addr.parse().expect("a socket address");
            }
        }
    }

    /// The child's process id (for signals other than SIGTERM).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the process was started with (rewrite it, then reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit, at most until `deadline`; returns its status.
    pub async fn exit_by(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse still running; stderr so far:\n{}",
                self.seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stdout lines written so far (the combined access log goes there).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The stderr lines written so far, without waiting for more.
    pub async fn all_lines_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Every stderr line, once the process has exited and its stderr is closed.
    pub async fn all_lines(&mut self) -> String {
        while let Ok(Some(line)) = timeout(super::WAIT, self.lines.recv()).await {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// What a finished gatehouse process left.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the gatehouse binary with `args`, killing it (by PID) if it is still running after
/// ten seconds.
pub fn run_gatehouse(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatehouse {args:?} did not exit within 10s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
