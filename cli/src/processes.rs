//! Child processes of the local runner: started with their output in a log file, watched, and
//! restarted like a pod's container would be. Every child dies with the runner.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::Context;
use tokio::process::{Child, Command};

pub struct Supervised {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
}

impl Supervised {
    pub fn new(name: &str, program: &Path, args: Vec<String>, env: Vec<(String, String)>, run_dir: &Path) -> Self {
        Supervised {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            env,
            log: run_dir.join(format!("{name}.log")),
            pid_file: run_dir.join("pids").join(name),
            child: None,
            restarts: 0,
            last_exit: None,
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts (or restarts) the process, appending to its log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", self.name))?;
        if let Some(pid) = child.id() {
            std::fs::create_dir_all(self.pid_file.parent().expect("pids dir"))?;
            std::fs::write(&self.pid_file, pid.to_string())?;
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.restarts += 1;
        self.start()
    }

    /// The exit status if the process ended since the last poll.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.last_exit = Some(status);
        Some(status)
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            self.last_exit = child.wait().await.ok();
        }
    }

    /// Waits up to `timeout` for a clean exit, then kills.
    pub async fn wait_or_stop(&mut self, timeout: std::time::Duration) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Ok(status)) = tokio::time::timeout(timeout, child.wait()).await
        {
            self.last_exit = Some(status);
            self.child = None;
            return;
        }
        self.stop().await;
    }
}
