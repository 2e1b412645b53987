//! Starting, stopping and killing workers, and the sandbox's scaler.

use super::*;

impl System {
    /// Starts the sandbox's autoscaler with `args` (its --target, --min,
    /// --max, ...): it reads the controller's scaling signal from the
    /// sandbox's CloudWatch (the controller needs `--scaling-namespace
    /// Muster`) and starts and stops workers like the others, each with a
    /// certificate of its own. Its decisions go to `scaler.csv` in the
    /// system's directory.
    pub fn start_scaler(&mut self, args: &[&str]) -> PathBuf {
        let record = self.dir.path().join("scaler.csv");
        let pki = self.creds.files.ca.parent().expect("the PKI directory").to_path_buf();
        for n in 1..=32 {
            self.creds.worker_files(&format!("scaler-{n}"));
        }
        let queue_name = self.fleet.queue_url.rsplit('/').next().expect("a queue URL").to_owned();
        let script = muster_sim::testkit::workspace_root().join("deploy/local/scaler.py");
        let mut command = self.command_at(&muster_sim::testkit::venv_python(), "hub", "scaler");
        command
            .arg(script)
            .args(["--queue-name", &queue_name, "--record"])
            .arg(&record)
            .arg("--log-dir")
            .arg(self.dir.path())
            .args(["--worker-env", "AWS_PROFILE=worker"])
            .arg("--worker-env")
            .arg(format!("MUSTER_TLS_CERT={}/workers/{{id}}.pem", pki.display()))
            .arg("--worker-env")
            .arg(format!("MUSTER_TLS_KEY={}/workers/{{id}}.key", pki.display()))
            .env("MUSTER_TLS_CA", &self.creds.files.ca)
            .args(args)
            .arg("--")
            .arg(binary("muster-worker"))
            .args([
                "--controller",
                &format!("https://localhost:{}", self.worker_port),
                "--queue-url",
                &self.fleet.queue_url,
                "--shutdown-grace",
                &self.options.shutdown_grace.to_string(),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(&self.options.worker_args);
        self.scaler = Some(command.spawn().expect("the scaler starts"));
        record
    }

    /// Stops the scaler as an operator would (SIGTERM): it stops its
    /// workers gracefully first.
    pub fn stop_scaler(&mut self) {
        if let Some(child) = self.scaler.take() {
            terminate(child);
        }
    }

    /// Starts a worker; returns its index.
    pub fn start_worker(&mut self) -> usize {
        self.start_worker_with(&[])
    }

    /// Starts a worker with more environment (a crash point, say).
    pub fn start_worker_with(&mut self, env: &[(&str, &str)]) -> usize {
        let index = self.workers.len();
        let name = format!("worker-{index}");
        let metrics_port = free_port();
        self.worker_metrics_ports.push(metrics_port);
        let (cert, key) = self.creds.worker_files(&name);
        let child = self
            .command("muster-worker", "worker", &name)
            .envs(env.iter().copied())
            .env("MUSTER_TLS_CA", &self.creds.files.ca)
            .env("MUSTER_TLS_CERT", cert)
            .env("MUSTER_TLS_KEY", key)
            .args([
                "--controller",
                &format!("https://localhost:{}", self.worker_port),
                "--queue-url",
                &self.fleet.queue_url,
                "--worker-id",
                &name,
                "--shutdown-grace",
                &self.options.shutdown_grace.to_string(),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(&self.options.worker_args)
            .spawn()
            .expect("a worker starts");
        self.workers.push((name, Some(child)));
        index
    }

    /// SIGKILLs a worker.
    pub fn kill_worker(&mut self, index: usize) {
        if let Some(mut child) = self.workers[index].1.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERMs a worker, as a scale-in does, and goes on at once: the
    /// worker lets its tasks run for its grace, hands back the rest and
    /// exits by itself, while other things happen. It no longer counts as
    /// running (its process is reaped with the system).
    pub fn scale_in_worker(&mut self, index: usize) {
        if let Some(child) = self.workers[index].1.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            self.stopping.push(child);
        }
    }

    /// SIGTERMs a worker and waits for it to exit.
    pub fn stop_worker(&mut self, index: usize) {
        if let Some(child) = self.workers[index].1.take() {
            terminate(child);
        }
    }

    /// How many workers have been started (running or not).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// If a worker exited by itself (a crash point), how; it then counts as
    /// not running.
    pub fn reap_worker(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let status = self.workers.get_mut(index)?.1.as_mut()?.try_wait().ok()??;
        self.workers[index].1 = None;
        Some(status)
    }

    /// A worker's process id, while it runs.
    pub fn worker_pid(&self, index: usize) -> Option<u32> {
        self.workers
            .get(index)
            .and_then(|(_, child)| child.as_ref().map(Child::id))
    }
}

/// One decision of the sandbox's scaler, a line of its `--record` CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerDecision {
    /// Seconds since the scaler started.
    pub seconds: f64,
    /// Workers it was running.
    pub workers: u32,
    /// Workers the controller saw working, when it published them.
    pub working: Option<u32>,
}

/// Every decision recorded so far at `path` (none before the file exists).
pub fn scaler_decisions(path: &std::path::Path) -> Vec<ScalerDecision> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            // seconds,workers,desired,demand,demand_per_worker,working
            let fields: Vec<&str> = line.split(',').collect();
            Some(ScalerDecision {
                seconds: fields.first()?.parse().ok()?,
                workers: fields.get(1)?.parse().ok()?,
                working: fields.get(5).and_then(|w| w.parse().ok()),
            })
        })
        .collect()
}
