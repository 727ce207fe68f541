//! Harness for end-to-end tests: the real binaries as processes on free ports, each test
//! on a database of its own, talked to over real HTTP.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

pub const ADMIN_KEY: &str = "e2e-operator-key-0123456789";
pub const INTERNAL_TOKEN: &str = "e2e-internal-token-0123456789";

/// The workspace's build directory holding the binaries (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let base = std::env::var("DATABASE_URL")
            .context("DATABASE_URL must point at the test Postgres")?;
        let server = base
            .rsplit_once('/')
            .map(|(s, _)| s.to_owned())
            .context("DATABASE_URL has no database")?;
        let name = format!("mercato_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        Ok(Self {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Dropping needs async; a short-lived runtime on its own thread keeps Drop simple.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&format!("{server}/postgres"))
                    .await
                    .ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A running binary, killed when dropped. Its output goes to `target/e2e-logs/`.
pub struct Process {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Process {
    pub fn start(
        bin_name: &str,
        args: &[&str],
        port: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let path = bin(bin_name)?;
        let logs = path.parent().context("bin dir")?.join("e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{bin_name}-{port}.log")))?;
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut command = Command::new(&path);
        command
            .args(args)
            .env("MERCATO_CONFIG_DIR", config)
            .env("MERCATO_ENV", "test")
            .env("MERCATO__SERVER__PORT", port.to_string())
            .env("MERCATO__LOG__FORMAT", "json")
            .env("MERCATO_ADMIN_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Self {
            name: bin_name.to_owned(),
            port,
            child,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited early with {status}", self.name);
            }
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} was not ready within 60 s", self.name)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("could not signal {}", self.name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not stop within 30 s of SIGTERM", self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to completion (a one-shot like `mercato migrate`).
pub fn run_once(bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut command = Command::new(bin(bin_name)?);
    command
        .args(args)
        .env("MERCATO_CONFIG_DIR", config)
        .env("MERCATO_ENV", "test");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "{bin_name} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The walkthrough a new user follows, through whatever `base` URL fronts the API:
/// operator creates a tenant and keys, the tenant loads customers, pages through them and
/// reads one, runs a campaign, writes copy with the model, trains, activates and scores a
/// sequence model and explains a prediction; roles, tenants and revocation are enforced.
pub async fn walkthrough(base: &str) -> anyhow::Result<()> {
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    let c = reqwest::Client::new();
    let url = |p: &str| format!("{base}{p}");
    let tenant: Value = c
        .post(url("/v1/admin/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Walkthrough Shop"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let tenant_id = tenant["id"].as_str().context("tenant id")?;
    let key_of = |role: &'static str| {
        let c = c.clone();
        let u = url(&format!("/v1/admin/tenants/{tenant_id}/keys"));
        async move {
            let issued: Value = c
                .post(u)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"name": role, "role": role}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok((
                issued["key"].as_str().context("key")?.to_owned(),
                issued["id"].as_str().context("id")?.to_owned(),
            ))
        }
    };
    let (writer, writer_id) = key_of("writer").await?;
    let (reader, _) = key_of("reader").await?;

    let batch: Value = c
        .post(url("/v1/profiling/customers/batch"))
        .bearer_auth(&writer)
        .json(&json!({"items": [
            {"external_id": "c1", "email": "One@Example.com", "country": "de"},
            {"external_id": "c2", "email": "broken"},
            {"external_id": "c3", "phone": "+49 151 1234 5678"},
            {"external_id": "c4", "consent": {"email": true}}
        ]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        batch["accepted"] == 3 && batch["rejected"] == 1,
        "batch result {batch}"
    );
    anyhow::ensure!(
        batch["items"][1]["errors"][0]["field"] == "items[1].email",
        "batch result {batch}"
    );

    let first: Value = c
        .get(url("/v1/profiling/customers?limit=2"))
        .bearer_auth(&reader)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let cursor = first["next_cursor"].as_str().context("a second page")?;
    let second: Value = c
        .get(url(&format!(
            "/v1/profiling/customers?limit=2&cursor={cursor}"
        )))
        .bearer_auth(&reader)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ids: Vec<&str> = first["items"]
        .as_array()
        .into_iter()
        .chain(second["items"].as_array())
        .flatten()
        .filter_map(|c| c["external_id"].as_str())
        .collect();
    anyhow::ensure!(ids == ["c1", "c3", "c4"], "pages held {ids:?}");
    anyhow::ensure!(second["next_cursor"].is_null(), "no third page");
    anyhow::ensure!(
        first["items"][0]["email"] == "one@example.com" && first["items"][0]["country"] == "DE"
    );

    let id = first["items"][0]["id"].as_str().context("id")?;
    let one = c
        .get(url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&reader)
        .send()
        .await?;
    anyhow::ensure!(one.status() == StatusCode::OK);

    let forbidden = c
        .post(url("/v1/profiling/customers"))
        .bearer_auth(&reader)
        .json(&json!({"external_id": "c9"}))
        .send()
        .await?;
    anyhow::ensure!(
        forbidden.status() == StatusCode::FORBIDDEN,
        "reader wrote: {}",
        forbidden.status()
    );

    // A campaign through the gateway: start, decide, report an outcome, read the metrics.
    let send = |method: reqwest::Method, path: String, body: Value| {
        let r = c
            .request(method, url(&path))
            .bearer_auth(&writer)
            .json(&body);
        async move {
            let r = r.send().await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
            anyhow::Ok(body)
        }
    };
    let post = reqwest::Method::POST;
    let campaign = send(
        post.clone(),
        "/v1/metrics/campaigns".into(),
        json!({
            "name": "Welcome", "goal": {"kind": "conversion", "value_per_conversion": 5},
            "channels": [{"channel": "email", "cost": 0.01}],
            "variants": [{"name": "A", "content": {"subject": "Welcome", "body": "Hello"}},
                         {"name": "B", "content": {"subject": "Hi there", "body": "Hello again"}}]
        }),
    )
    .await?;
    let campaign_id = campaign["id"].as_str().context("campaign id")?;
    send(
        post.clone(),
        format!("/v1/metrics/campaigns/{campaign_id}/status"),
        json!({"status": "running"}),
    )
    .await?;
    let customer_ids: Vec<&str> = first["items"]
        .as_array()
        .into_iter()
        .chain(second["items"].as_array())
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    let decisions = send(
        post.clone(),
        format!("/v1/metrics/campaigns/{campaign_id}/decisions"),
        json!({"customers": customer_ids}),
    )
    .await?;
    // Only c4 consented to email.
    anyhow::ensure!(
        decisions["decided"] == 1 && decisions["skipped"] == 2,
        "{decisions}"
    );
    let decision = decisions["items"][2]["decision"].clone();
    send(
        post.clone(),
        "/v1/metrics/outcomes".into(),
        json!({"decision_id": decision["id"], "type": "converted", "revenue": 40}),
    )
    .await?;
    let metrics = send(
        reqwest::Method::GET,
        format!("/v1/metrics/campaigns/{campaign_id}/metrics"),
        Value::Null,
    )
    .await?;
    anyhow::ensure!(
        metrics["treated"]["conversions"] == 1 && metrics["treated"]["value"] == 5.0,
        "{metrics}"
    );

    // Copy through the gateway with the real model: a checked variant for a customer, and
    // the OpenAI-compatible route (outside /v1/content, routed to the content service too).
    let copy = send(
        post.clone(),
        "/v1/content/generate".into(),
        json!({"customer_id": id, "channel": "sms", "brief": "Welcome them to the shop",
               "max_attempts": 1, "sampling": {"max_tokens": 32, "seed": 1}}),
    )
    .await?;
    let variant = &copy["variants"][0];
    anyhow::ensure!(
        variant["fields"]["body"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
            && variant["checks"].as_array().is_some_and(|c| c.len() == 8)
            && variant["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{copy}"
    );
    let chat = send(
        post.clone(),
        "/v1/chat/completions".into(),
        json!({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}),
    )
    .await?;
    anyhow::ensure!(chat["object"] == "chat.completion", "{chat}");

    // A job's final state, polled through the gateway (at most a minute).
    let wait_job = |job: Value| {
        let send = &send;
        async move {
            let job_id = job["id"].as_str().context("job id")?.to_owned();
            for _ in 0..600 {
                let j = send(
                    reqwest::Method::GET,
                    format!("/v1/jobs/{job_id}"),
                    Value::Null,
                )
                .await?;
                if matches!(
                    j["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                ) {
                    return anyhow::Ok(j);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            bail!("job {job_id} did not finish")
        }
    };

    // Campaign variants written from a brief, as a job of the content service; those that
    // pass the guardrails join the running campaign.
    let job = send(
        post.clone(),
        format!("/v1/content/campaigns/{campaign_id}/variants"),
        json!({"channel": "email", "brief": "Welcome new customers to the shop", "count": 1,
               "max_attempts": 1, "sampling": {"max_tokens": 48, "seed": 2}}),
    )
    .await?;
    let finished = wait_job(job).await?;
    let result = &finished["result"];
    anyhow::ensure!(
        finished["status"] == "succeeded"
            && result["added"].as_array().map(Vec::len).unwrap_or(0)
                + result["rejected"].as_array().map(Vec::len).unwrap_or(0)
                == 1,
        "{finished}"
    );

    // A sequence model of the tenant's own events through the gateway: training as a job
    // of the profiling service, activation, scoring into traits, an explained prediction.
    // Even customers buy about weekly, odd ones browse and buy about every other month.
    let days_ago = |d: i64| (chrono::Utc::now() - chrono::Duration::days(d)).to_rfc3339();
    let mut events = Vec::new();
    for n in 0..80i64 {
        let customer = format!("s{n}");
        let (gap, every) = if n % 2 == 0 { (7, 1) } else { (5, 12) };
        let mut day = 150 - n % 6;
        let mut k = 0;
        while day > 1 {
            events.push(
                json!({"event_id": format!("{customer}-{k}v"), "customer_id": customer,
                               "type": "view", "timestamp": days_ago(day)}),
            );
            if k % every == 0 {
                events.push(
                    json!({"event_id": format!("{customer}-{k}p"), "customer_id": customer,
                                   "type": "purchase", "timestamp": days_ago(day),
                                   "revenue": 20, "currency": "EUR"}),
                );
            }
            k += 1;
            day -= gap;
        }
    }
    for chunk in events.chunks(1000) {
        let r = send(
            post.clone(),
            "/v1/profiling/events/batch".into(),
            json!({"items": chunk}),
        )
        .await?;
        anyhow::ensure!(r["rejected"] == 0, "{r}");
    }
    let job = send(
        post.clone(),
        "/v1/profiling/models".into(),
        json!({"task": "purchase", "horizon_days": 14, "min_positive": 20,
               "hyper": {"seq_len": 8, "embedding_dim": 8, "hidden_dim": 8, "epochs": 3,
                         "batch_size": 64, "learning_rate": 0.01, "seed": 1}}),
    )
    .await?;
    let trained = wait_job(job).await?;
    let model_id = trained["result"]["model_id"]
        .as_str()
        .with_context(|| format!("{trained}"))?
        .to_owned();
    let model = send(
        post.clone(),
        format!("/v1/profiling/models/{model_id}/activate"),
        json!({}),
    )
    .await?;
    anyhow::ensure!(
        model["active"] == true && model["evaluation"]["model"]["roc_auc"].is_number(),
        "{model}"
    );
    let scored = wait_job(
        send(
            post.clone(),
            "/v1/profiling/models/score".into(),
            json!({"task": "purchase"}),
        )
        .await?,
    )
    .await?;
    anyhow::ensure!(scored["status"] == "succeeded", "{scored}");
    let buyer = send(
        reqwest::Method::GET,
        "/v1/profiling/customers?external_id=s0".into(),
        Value::Null,
    )
    .await?;
    let buyer = buyer["items"][0]["id"].as_str().context("customer s0")?;
    let prediction = send(
        reqwest::Method::GET,
        format!("/v1/profiling/customers/{buyer}/prediction"),
        Value::Null,
    )
    .await?;
    anyhow::ensure!(
        prediction["model_id"] == model_id.as_str()
            && prediction["score"]
                .as_f64()
                .is_some_and(|p| (0.0..=1.0).contains(&p))
            && prediction["influences"]
                .as_array()
                .is_some_and(|i| !i.is_empty()),
        "{prediction}"
    );

    // The rest of the content service through the gateway: a catalog and recommendations
    // from its embeddings, embeddings on demand, a tenant template, and bulk copy for a
    // segment stored as messages.
    send(
        reqwest::Method::POST,
        "/v1/profiling/products".into(),
        json!({"items": [
            {"product_id": "tent", "title": "Summit Tent", "description": "Two-person tent for camping", "category": "camping", "price": 199.0, "currency": "EUR"},
            {"product_id": "stove", "title": "Camp Stove", "description": "Compact gas stove for camping", "category": "camping", "price": 59.0, "currency": "EUR"},
            {"product_id": "lamp", "title": "Desk Lamp", "description": "LED lamp for the home office", "category": "home", "price": 39.0, "currency": "EUR"}
        ]}),
    )
    .await?;
    send(
        post.clone(),
        "/v1/profiling/events/batch".into(),
        json!({"items": [
            {"event_id": "s0-tent", "customer_id": "s0", "type": "view", "timestamp": days_ago(0), "product_ids": ["tent"]},
            {"event_id": "s0-stove", "customer_id": "s0", "type": "purchase", "timestamp": days_ago(0),
             "product_ids": ["stove"], "revenue": 59.0, "currency": "EUR"}
        ]}),
    )
    .await?;
    let recs = send(
        reqwest::Method::GET,
        format!("/v1/content/customers/{buyer}/recommendations?k=2"),
        Value::Null,
    )
    .await?;
    let recommended: Vec<&str> = recs["recommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["product_id"].as_str())
        .collect();
    anyhow::ensure!(
        recommended.first() == Some(&"tent") && !recommended.contains(&"stove"),
        "{recs}"
    );
    let vectors = send(
        post.clone(),
        "/v1/content/embeddings".into(),
        json!({"input": ["Warm tents for winter", "A lamp for the desk"]}),
    )
    .await?;
    anyhow::ensure!(
        vectors["data"][1]["embedding"].as_array().map(Vec::len) == Some(384),
        "{vectors}"
    );
    send(
        reqwest::Method::PUT,
        "/v1/content/templates/push".into(),
        json!({"fields": {"title": "News for you", "body": "Hi {{ customer.first_name | default: 'there' }}, new gear is in."}}),
    )
    .await?;
    let segment = send(
        post.clone(),
        "/v1/profiling/segments".into(),
        json!({"name": "email ok", "rule": {"field": "consent.email", "op": "eq", "value": true}}),
    )
    .await?;
    let bulk = wait_job(
        send(
            post.clone(),
            "/v1/content/generate/bulk".into(),
            json!({"segment_id": segment["id"], "channel": "push", "brief": "New camping gear is in",
                   "max_attempts": 1, "sampling": {"max_tokens": 16, "seed": 1}}),
        )
        .await?,
    )
    .await?;
    anyhow::ensure!(bulk["status"] == "succeeded", "{bulk}");
    let bulk_id = bulk["id"].as_str().context("job id")?;
    let messages = send(
        reqwest::Method::GET,
        format!("/v1/content/messages?job_id={bulk_id}"),
        Value::Null,
    )
    .await?;
    anyhow::ensure!(
        messages["items"].as_array().map(Vec::len) == Some(1)
            && messages["items"][0]["provenance"]["prompt_version"].is_string(),
        "only c4 consented to email: {messages}"
    );

    c.delete(url(&format!(
        "/v1/admin/tenants/{tenant_id}/keys/{writer_id}"
    )))
    .bearer_auth(ADMIN_KEY)
    .send()
    .await?
    .error_for_status()?;
    let revoked = c
        .get(url("/v1/profiling/customers"))
        .bearer_auth(&writer)
        .send()
        .await?;
    anyhow::ensure!(
        revoked.status() == StatusCode::UNAUTHORIZED,
        "revoked key answered {}",
        revoked.status()
    );
    Ok(())
}
