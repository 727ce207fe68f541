//! Profiling benchmark, against a running Mercato (see bench/profiling.sh):
//! - ingestion: events/s through the HTTP batch API (batches of 500, several clients)
//!   beside `COPY` of the same rows into the same table by psql;
//! - full profile recompute (the job) beside a bare SQL aggregate of the same RFM figures;
//! - freshness: from an event's acceptance to its profile and segment reflecting it, under
//!   ingestion load.

use mercato_bench::shop;

use std::{
    io::Write,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, env = "MERCATO_ADMIN_KEY")]
    admin_key: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 100_000)]
    customers: usize,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 60)]
    probes: usize,
    #[arg(long, default_value = "bench/out")]
    out: std::path::PathBuf,
}

struct Tenant {
    id: String,
    key: String,
}

async fn tenant(c: &reqwest::Client, a: &Args, name: &str) -> anyhow::Result<Tenant> {
    let t: Value = c
        .post(format!("{}/v1/admin/tenants", a.url))
        .bearer_auth(&a.admin_key)
        .json(&json!({"name": name}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = t["id"].as_str().context("tenant id")?.to_owned();
    let k: Value = c
        .post(format!("{}/v1/admin/tenants/{id}/keys", a.url))
        .bearer_auth(&a.admin_key)
        .json(&json!({"name": "bench", "role": "admin"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Tenant {
        id,
        key: k["key"].as_str().context("key")?.to_owned(),
    })
}

fn event_json(shop: &shop::Shop, e: &shop::Event) -> Value {
    let mut v = json!({
        "event_id": e.event_id, "customer_id": shop.customers[e.customer].external_id,
        "type": e.kind, "timestamp": e.at.to_rfc3339(),
    });
    if let Some(p) = e.product {
        v["product_ids"] = json!([shop.products[p].id]);
    }
    if let Some(r) = e.revenue {
        v["revenue"] = json!(r);
        v["currency"] = json!("EUR");
    }
    if let Some(ch) = e.channel {
        v["channel"] = json!(ch);
    }
    v
}

fn psql(url: &str, sql: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed())
}

/// COPY of the same event rows into profiling.events (customers first, not timed).
fn copy_baseline(
    a: &Args,
    shop: &shop::Shop,
    tenant: &Tenant,
) -> anyhow::Result<(Duration, usize)> {
    std::fs::create_dir_all(&a.out)?;
    let customers_csv = a.out.join("copy-customers.csv");
    let events_csv = a.out.join("copy-events.csv");
    let ids: Vec<String> = (0..shop.customers.len())
        .map(|i| format!("00000000-0000-7000-8000-{i:012}"))
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&customers_csv)?);
    for (c, id) in shop.customers.iter().zip(&ids) {
        writeln!(f, "{},{id},{}", tenant.id, c.external_id)?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&events_csv)?);
    for e in &shop.events {
        let product = e
            .product
            .map(|p| format!("{{{}}}", shop.products[p].id))
            .unwrap_or_else(|| "{}".into());
        let revenue = e.revenue.map(|r| r.to_string()).unwrap_or_default();
        let currency = if e.revenue.is_some() { "EUR" } else { "" };
        writeln!(
            f,
            "{},{},{},{},{},{product},{revenue},{currency},{},{{}}",
            tenant.id,
            e.event_id,
            ids[e.customer],
            e.kind,
            e.at.to_rfc3339(),
            e.channel.unwrap_or_default()
        )?;
    }
    f.flush()?;
    psql(
        &a.database_url,
        &format!(
            "\\copy profiling.customers (tenant_id, id, external_id) FROM '{}' WITH (FORMAT csv)",
            customers_csv.display()
        ),
    )?;
    let took = psql(
        &a.database_url,
        &format!(
            "\\copy profiling.events (tenant_id, event_id, customer_id, type, occurred_at, product_ids, revenue, currency, channel, properties) FROM '{}' WITH (FORMAT csv)",
            events_csv.display()
        ),
    )?;
    Ok((took, shop.events.len()))
}

/// Sends batches of 500 from a shared queue with `clients` concurrent clients.
async fn ingest(a: &Args, key: &str, batches: Vec<Value>) -> anyhow::Result<Duration> {
    let queue = Arc::new(Mutex::new(batches));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (queue, url, key) = (
            queue.clone(),
            format!("{}/v1/profiling/events/batch", a.url),
            key.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("queue poisoned"))?
                    .pop();
                let Some(batch) = next else {
                    return anyhow::Ok(());
                };
                let r: Value = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&batch)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                if r["rejected"] != 0 {
                    bail!("rejected items: {r}");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

async fn wait_job(
    c: &reqwest::Client,
    a: &Args,
    key: &str,
    job: &Value,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = job["id"].as_str().context("job id")?;
    loop {
        let j: Value = c
            .get(format!("{}/v1/jobs/{id}", a.url))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        match j["status"].as_str() {
            Some("succeeded") => return Ok(started.elapsed()),
            Some("failed") | Some("cancelled") => bail!("job ended: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    let shop = shop::generate(a.customers, a.events, 42);
    let purchases = shop.events.iter().filter(|e| e.kind == "purchase").count();
    eprintln!(
        "generated {} customers, {} events ({} purchases) in {:.1}s",
        shop.customers.len(),
        shop.events.len(),
        purchases,
        t0.elapsed().as_secs_f64()
    );

    let copy_tenant = tenant(&c, &a, "bench-copy").await?;
    let (copy_time, rows) = copy_baseline(&a, &shop, &copy_tenant)?;
    let copy_rate = rows as f64 / copy_time.as_secs_f64();
    eprintln!(
        "COPY: {rows} events in {:.1}s = {copy_rate:.0}/s",
        copy_time.as_secs_f64()
    );

    let api = tenant(&c, &a, "bench-api").await?;
    let products: Vec<Value> = shop
        .products
        .iter()
        .map(|p| json!({"product_id": p.id, "title": p.id, "category": shop::CATEGORIES[p.category], "price": p.price, "currency": "EUR"}))
        .collect();
    for chunk in products.chunks(1000) {
        c.post(format!("{}/v1/profiling/products", a.url))
            .bearer_auth(&api.key)
            .json(&json!({"items": chunk}))
            .send()
            .await?
            .error_for_status()?;
    }
    let mut batches: Vec<Value> =
        shop.events.chunks(500).map(|chunk| json!({"items": chunk.iter().map(|e| event_json(&shop, e)).collect::<Vec<_>>()})).collect();
    batches.reverse();
    let http_time = ingest(&a, &api.key, batches).await?;
    let http_rate = shop.events.len() as f64 / http_time.as_secs_f64();
    eprintln!(
        "HTTP: {} events in {:.1}s = {http_rate:.0}/s",
        shop.events.len(),
        http_time.as_secs_f64()
    );

    // Full recompute (the job) against the bare aggregate of the same figures.
    let job: Value = c
        .post(format!("{}/v1/profiling/profiles/recompute", a.url))
        .bearer_auth(&api.key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let recompute = wait_job(&c, &a, &api.key, &job).await?;
    let bare = psql(
        &a.database_url,
        &format!(
            "SELECT count(*) FROM (SELECT customer_id, count(*) AS events,
                    count(*) FILTER (WHERE type = 'purchase') AS purchases,
                    coalesce(sum(revenue) FILTER (WHERE type = 'purchase'), 0) AS revenue,
                    min(occurred_at) FILTER (WHERE type = 'purchase') AS first_purchase,
                    max(occurred_at) FILTER (WHERE type = 'purchase') AS last_purchase,
                    max(occurred_at) AS last_event
             FROM profiling.events WHERE tenant_id = '{}' AND customer_id IS NOT NULL GROUP BY customer_id) t",
            api.id
        ),
    )?;
    eprintln!(
        "recompute job {:.1}s, bare aggregate {:.1}s",
        recompute.as_secs_f64(),
        bare.as_secs_f64()
    );

    // Freshness under ingestion load: background clients resend the shop's events under new ids.
    let load_batches: Vec<Value> = shop
        .events
        .chunks(500)
        .take(400)
        .enumerate()
        .map(|(b, chunk)| {
            json!({"items": chunk.iter().map(|e| {
                let mut v = event_json(&shop, e);
                v["event_id"] = json!(format!("load-{b}-{}", e.event_id));
                v
            }).collect::<Vec<_>>()})
        })
        .collect();
    let load_args = Args {
        clients: 2,
        ..Args::parse()
    };
    let load_key = api.key.clone();
    let load = tokio::spawn(async move { ingest(&load_args, &load_key, load_batches).await });
    let rule_url = format!("{}/v1/profiling/segments/preview", a.url);
    let mut profile_ms = Vec::new();
    let mut segment_ms = Vec::new();
    for i in 0..a.probes {
        let probe = format!("probe-{i}");
        let r = c
            .post(format!("{}/v1/profiling/events", a.url))
            .bearer_auth(&api.key)
            .json(&json!({"event_id": format!("probe-event-{i}"), "customer_id": probe, "type": "purchase",
                          "timestamp": chrono::Utc::now().to_rfc3339(), "revenue": 10, "currency": "EUR"}))
            .send()
            .await?
            .error_for_status()?;
        let accepted = Instant::now();
        drop(r);
        let page: Value = c
            .get(format!(
                "{}/v1/profiling/customers?external_id={probe}",
                a.url
            ))
            .bearer_auth(&api.key)
            .send()
            .await?
            .json()
            .await?;
        let id = page["items"][0]["id"]
            .as_str()
            .context("probe customer")?
            .to_owned();
        loop {
            let p: Value = c
                .get(format!("{}/v1/profiling/customers/{id}/profile", a.url))
                .bearer_auth(&api.key)
                .send()
                .await?
                .json()
                .await?;
            if p["frequency"] == 1 {
                profile_ms.push(accepted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            let rule = json!({"rule": {"all": [{"field": "external_id", "op": "eq", "value": probe},
                                               {"field": "profile.frequency", "op": "gte", "value": 1}]}, "sample": 0});
            let p: Value = c
                .post(&rule_url)
                .bearer_auth(&api.key)
                .json(&rule)
                .send()
                .await?
                .json()
                .await?;
            if p["count"] == 1 {
                segment_ms.push(accepted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = load.await;
    profile_ms.sort_by(f64::total_cmp);
    segment_ms.sort_by(f64::total_cmp);

    let report = format!(
        "Synthetic shop: {} customers, {} events ({} purchases), {} HTTP clients, batches of 500.\n\n\
         | measure | Mercato | baseline | ratio |\n| --- | ---: | ---: | ---: |\n\
         | ingestion, events/s | {http_rate:.0} (HTTP batch API) | {copy_rate:.0} (psql COPY, same table) | {:.2}x |\n\
         | full profile recompute, s | {:.1} (job) | {:.1} (bare SQL aggregate) | {:.2}x speed |\n\n\
         Freshness under ingestion load (2 clients), {} probes: event accepted -> profile shows it p50 {:.1} ms, p95 {:.1} ms; \
         -> segment membership p50 {:.1} ms, p95 {:.1} ms (each includes one polling round trip).\n",
        shop.customers.len(),
        shop.events.len(),
        purchases,
        a.clients,
        http_rate / copy_rate,
        recompute.as_secs_f64(),
        bare.as_secs_f64(),
        bare.as_secs_f64() / recompute.as_secs_f64(),
        profile_ms.len(),
        percentile(&profile_ms, 0.5),
        percentile(&profile_ms, 0.95),
        percentile(&segment_ms, 0.5),
        percentile(&segment_ms, 0.95),
    );
    std::fs::write(a.out.join("profiling.md"), &report)?;
    print!("{report}");
    Ok(())
}
