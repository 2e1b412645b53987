//! Starting, stopping and killing controllers, and their database.

use super::*;

impl System {
    /// Starts (or restarts) the controller on its ports and data directory,
    /// and waits until it answers.
    pub async fn start_controller(&mut self) {
        self.start_controller_with(&[]).await;
    }

    /// Starts the controller with more environment (a crash point, say), and
    /// waits until it answers, or, armed with a crash point, until it died.
    pub async fn start_controller_with(&mut self, env: &[(&str, &str)]) {
        self.start_controller_of(0, env).await;
    }

    /// Starts the second controller (with two), on its own ports behind the
    /// same load balancers, and waits until it answers there.
    pub async fn start_standby(&mut self, env: &[(&str, &str)]) {
        self.start_controller_of(1, env).await;
    }

    /// Starts (or restarts) controller `index` (0: the first, 1: the
    /// standby) with more environment, and waits until it answers on its
    /// own port, or, armed with a crash point, until it died.
    pub async fn start_controller_of(&mut self, index: usize, env: &[(&str, &str)]) {
        let child = self.spawn_controller(index, env);
        *self.controller_slot(index) = Some(child);
        self.wait_for_controller(index, env).await;
    }

    /// Where controller `index`'s process is kept while it runs.
    fn controller_slot(&mut self, index: usize) -> &mut Option<Child> {
        match index {
            0 => &mut self.controller,
            _ => &mut self.ha.as_mut().expect("a system of two controllers").standby,
        }
    }

    /// How many controllers the system has (running or not).
    pub fn controller_count(&self) -> usize {
        if self.ha.is_some() { 2 } else { 1 }
    }

    /// Whether controller `index` says it leads (its metrics), or `None`
    /// when it does not answer within a second.
    pub async fn leads(&self, index: usize) -> Option<bool> {
        let port = self.metrics_port_of(index);
        // A controller killed a moment ago refuses the connection: not a
        // leader, and no failure of the caller.
        let (status, text) = tokio::time::timeout(Duration::from_secs(1), crate::otlp::try_http_get(port, "/metrics"))
            .await
            .ok()?
            .ok()?;
        (status == 200).then(|| text.lines().any(|line| line.trim() == "muster_controller_leader 1"))
    }

    /// Controller `index`'s own ports: (campaign, worker, metrics).
    fn controller_ports(&self, index: usize) -> (u16, u16, u16) {
        match &self.ha {
            Some(ha) => ha.ports[index],
            None => (self.campaign_port, self.worker_port, self.metrics_port),
        }
    }

    /// Controller `index`'s own campaign API port, not the load balancer's.
    pub fn campaign_port_of(&self, index: usize) -> u16 {
        self.controller_ports(index).0
    }

    /// Controller `index`'s metrics port (0: the first, 1: the standby).
    pub fn metrics_port_of(&self, index: usize) -> u16 {
        self.controller_ports(index).2
    }

    /// Controller `index`'s process id, while it runs.
    pub fn pid_of(&self, index: usize) -> Option<u32> {
        match index {
            0 => self.controller_pid(),
            _ => self.ha.as_ref().and_then(|ha| ha.standby.as_ref()).map(Child::id),
        }
    }

    /// SIGKILLs controller `index`.
    pub fn kill_controller_of(&mut self, index: usize) {
        if let Some(mut child) = self.controller_slot(index).take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// Takes controller `index` out of the load balancers' service (what a
    /// failing health check does) or puts it back.
    pub fn set_in_service(&self, index: usize, in_service: bool) {
        let ha = self.ha.as_ref().expect("a system of two controllers");
        ha.campaign.set_in_service(index, in_service);
        ha.worker.set_in_service(index, in_service);
    }

    /// Controller `index`'s data directory (its SQLite store).
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("data-{index}"))
    }

    fn spawn_controller(&mut self, index: usize, env: &[(&str, &str)]) -> Child {
        self.controller_starts += 1;
        let (campaign_port, worker_port, metrics_port) = self.controller_ports(index);
        let files = &self.creds.files;
        let mut command = self.command(
            "muster-controller",
            "hub",
            &format!("controller-{}", self.controller_starts),
        );
        command
            .envs(env.iter().copied())
            .env("MUSTER_API_TOKENS", self.creds.token_entries().join(","))
            .env("MUSTER_EXTERNAL_ID", &self.fleet.external_id)
            .args(["--tls-cert", &files.controller_cert.display().to_string()])
            .args(["--tls-key", &files.controller_key.display().to_string()])
            .args(["--worker-ca", &files.worker_ca.display().to_string()])
            .args(["--client-ca", &files.ca.display().to_string()])
            .args(["--api-client", &format!("{}:admin", muster_sim::certs::ADMIN_CN)])
            .args(["--policy", &self.creds.policy_path().display().to_string()]);
        command
            .args([
                "--listen",
                &format!("127.0.0.1:{campaign_port}"),
                "--worker-listen",
                &format!("127.0.0.1:{worker_port}"),
                "--data-dir",
                &self.data_dir(index).display().to_string(),
                "--queue-url",
                &self.fleet.queue_url,
                "--dead-letter-queue-url",
                &self.fleet.dlq_url,
                "--results-bucket",
                &self.fleet.results_bucket,
                "--lease-ttl",
                &self.options.lease_ttl.to_string(),
                "--reconcile-ms",
                "200",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(self.database.iter().flat_map(|d| {
                let url = match &self.database_proxy {
                    Some(proxy) => through(d.url(), proxy.addr),
                    None => d.url().to_owned(),
                };
                ["--database-url".to_owned(), url]
            }))
            .args(
                Some(&self.fleet.command_events_queue_url)
                    .filter(|url| self.options.command_events && !url.is_empty())
                    .map(|url| ["--command-events-queue-url".to_owned(), url.clone()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.options.controller_args)
            .spawn()
            .expect("the controller starts")
    }

    async fn wait_for_controller(&mut self, index: usize, env: &[(&str, &str)]) {
        let port = self.campaign_port_of(index);
        let mut client =
            crate::stack::campaign_client(self.creds.endpoint(port, Some(&self.creds.pki.admin)).connect_lazy());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.list_campaigns(ListCampaignsRequest::default()).await.is_ok() {
                return;
            }
            // One armed to crash may die before it answers: whoever waits
            // for it sees that with `reap_controller`.
            let armed = env.iter().any(|(name, _)| *name == "MUSTER_CRASH_AT");
            if armed
                && self
                    .controller_slot(index)
                    .as_mut()
                    .is_some_and(|child| child.try_wait().ok().flatten().is_some())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "controller {index} did not answer within 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cuts the controllers off their database (`out`: open connections
    /// closed, new ones refused) or lets them reach it again. Needs
    /// [`SystemOptions::database_proxy`].
    pub fn database_outage(&self, out: bool) {
        self.database_link().set_in_service(0, !out);
    }

    /// The proxy between the controllers and their database, to cut it
    /// while `self` is borrowed otherwise.
    pub fn database_link(&self) -> Arc<crate::proxy::FailoverProxy> {
        self.database_proxy
            .clone()
            .expect("SystemOptions::database_proxy is set")
    }

    /// Copies the stopped controller's SQLite store into a new PostgreSQL
    /// database with `muster-controller copy-store`, as an operator moving
    /// to several controllers does; on success the controller starts on
    /// that database from then on. The tool's output, whatever its exit.
    pub fn copy_store_to_postgres(&mut self) -> std::process::Output {
        assert!(self.controller.is_none(), "the controller is stopped first");
        assert!(self.database.is_none(), "the controller was on SQLite");
        let database = muster_controller::store::testkit::TestDatabase::create();
        let output = self
            .command("muster-controller", "hub", "copy-store")
            .args(["--data-dir", &self.data_dir(0).display().to_string()])
            .args(["--database-url", database.url(), "copy-store"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("muster-controller copy-store runs");
        if output.status.success() {
            self.database = Some(database);
        }
        output
    }

    /// SIGKILLs the controller.
    pub fn kill_controller(&mut self) {
        self.kill_controller_of(0);
    }

    /// SIGTERMs the controller and waits for it to exit.
    pub fn stop_controller(&mut self) {
        if let Some(child) = self.controller.take() {
            terminate(child);
        }
    }

    /// If the controller exited by itself (a crash point), how; it then
    /// counts as not running.
    pub fn reap_controller(&mut self) -> Option<std::process::ExitStatus> {
        self.reap_controller_of(0)
    }

    /// As [`System::reap_controller`], for controller `index`.
    pub fn reap_controller_of(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let slot = self.controller_slot(index);
        let status = slot.as_mut()?.try_wait().ok()??;
        *slot = None;
        Some(status)
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }
}
