//! Campaign simulator, against a running Mercato (see bench/campaign.sh).
//!
//! A synthetic population whose true conversion rates differ by segment, channel and
//! variant runs through the real HTTP API: decisions in batches, simulated outcomes drawn
//! from the true rates posted back, for `--decisions` customers. Reported:
//! - expected conversions lost against the oracle (the best eligible arm for each
//!   customer) by the bandit, and by uniform allocation over the same customers and
//!   eligible arms; the reduction in regret is the figure of merit;
//! - off-policy estimates of the server for the uniform and logging policies against
//!   their simulated truth;
//! - decisions/s (batches of 500) and outcome ingestion/s through the API.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, env = "MERCATO_ADMIN_KEY")]
    admin_key: String,
    /// Customers, one decision each.
    #[arg(long, default_value_t = 50_000)]
    decisions: usize,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const SEGMENTS: [&str; 3] = ["young", "family", "senior"];
const CHANNELS: [(&str, f64); 3] = [("email", 0.002), ("sms", 0.03), ("push", 0.001)];
const VARIANTS: [&str; 3] = ["A", "B", "C"];
const VALUE: f64 = 10.0;

/// True conversion rate per send, by segment, channel and variant: each segment has a
/// different best arm, and the spread is a few percentage points, as in real campaigns.
fn true_rate(segment: usize, channel: usize, variant: usize) -> f64 {
    const BASE: [[f64; 3]; 3] = [
        // email, sms, push
        [0.020, 0.035, 0.050], // young: push
        [0.045, 0.030, 0.015], // family: email
        [0.030, 0.055, 0.010], // senior: sms
    ];
    const LIFT: [[f64; 3]; 3] = [
        // A, B, C
        [1.0, 1.4, 0.7],
        [1.2, 0.8, 1.0],
        [0.9, 1.0, 1.5],
    ];
    BASE[segment][channel] * LIFT[segment][variant]
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Person {
    id: String,
    segment: usize,
    consent: [bool; 3],
}

impl Person {
    fn eligible(&self) -> Vec<(usize, usize)> {
        (0..3)
            .filter(|&c| self.consent[c])
            .flat_map(|c| (0..3).map(move |v| (c, v)))
            .collect()
    }

    fn reward(&self, c: usize, v: usize) -> f64 {
        VALUE * true_rate(self.segment, c, v) - CHANNELS[c].1
    }

    fn oracle(&self) -> Option<(usize, usize)> {
        self.eligible()
            .into_iter()
            .max_by(|a, b| self.reward(a.0, a.1).total_cmp(&self.reward(b.0, b.1)))
    }
}

async fn call(
    c: &reqwest::Client,
    key: &str,
    method: reqwest::Method,
    url: String,
    body: &Value,
) -> anyhow::Result<Value> {
    let r = c
        .request(method, url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    Ok(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let c = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let t = call(
        &c,
        &a.admin_key,
        post.clone(),
        format!("{}/v1/admin/tenants", a.url),
        &json!({"name": "campaign-sim"}),
    )
    .await?;
    let tenant = t["id"].as_str().context("tenant id")?;
    let k = call(
        &c,
        &a.admin_key,
        post.clone(),
        format!("{}/v1/admin/tenants/{tenant}/keys", a.url),
        &json!({"name": "sim", "role": "admin"}),
    )
    .await?;
    let key = k["key"].as_str().context("key")?.to_owned();

    // Population.
    let mut rng = Rng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut people = Vec::with_capacity(a.decisions);
    let started = Instant::now();
    for chunk_start in (0..a.decisions).step_by(1000) {
        let mut items = Vec::new();
        let mut batch = Vec::new();
        for i in chunk_start..(chunk_start + 1000).min(a.decisions) {
            let segment = (rng.next() * 3.0) as usize % 3;
            let consent = [rng.next() < 0.9, rng.next() < 0.5, rng.next() < 0.4];
            items.push(json!({"external_id": format!("p{i}"),
                "consent": {"email": consent[0], "sms": consent[1], "push": consent[2]},
                "traits": {"segment": SEGMENTS[segment]}}));
            batch.push((segment, consent));
        }
        let r = call(
            &c,
            &key,
            post.clone(),
            format!("{}/v1/profiling/customers/batch", a.url),
            &json!({"items": items}),
        )
        .await?;
        for (item, (segment, consent)) in r["items"].as_array().context("items")?.iter().zip(batch)
        {
            people.push(Person {
                id: item["id"].as_str().context("customer id")?.to_owned(),
                segment,
                consent,
            });
        }
    }
    eprintln!(
        "{} customers in {:.1}s",
        people.len(),
        started.elapsed().as_secs_f64()
    );

    let campaign = |name: &str| {
        json!({
            "name": name,
            "goal": {"kind": "conversion", "value_per_conversion": VALUE},
            "context_by": "trait:segment",
            "channels": CHANNELS.iter().map(|(ch, cost)| json!({"channel": ch, "cost": cost})).collect::<Vec<_>>(),
            "variants": VARIANTS.iter().map(|v| json!({"name": v, "content": {"subject": format!("Offer {v}"), "body": format!("Copy {v}")}})).collect::<Vec<_>>(),
            "holdout_share": 0.05,
            "optimisation": {"enabled": false},
            "seed": a.seed
        })
    };
    let sim = call(
        &c,
        &key,
        post.clone(),
        format!("{}/v1/metrics/campaigns", a.url),
        &campaign("simulation"),
    )
    .await?;
    let id = sim["id"].as_str().context("campaign id")?.to_owned();
    let variant_index: std::collections::HashMap<String, usize> = sim["variants"]
        .as_array()
        .context("variants")?
        .iter()
        .filter_map(|v| {
            Some((
                v["id"].as_str()?.to_owned(),
                VARIANTS
                    .iter()
                    .position(|n| Some(*n) == v["name"].as_str())?,
            ))
        })
        .collect();
    call(
        &c,
        &key,
        post.clone(),
        format!("{}/v1/metrics/campaigns/{id}/status", a.url),
        &json!({"status": "running"}),
    )
    .await?;

    // The loop: decide a batch, draw outcomes from the true rates, post them back.
    let by_id: std::collections::HashMap<&str, &Person> =
        people.iter().map(|p| (p.id.as_str(), p)).collect();
    let (mut regret_bandit, mut regret_uniform, mut oracle_conv, mut bandit_conv, mut uniform_conv) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut realised = 0u64;
    let mut sent = 0u64;
    let (mut decide_time, mut outcome_time) = (Duration::ZERO, Duration::ZERO);
    let (mut decided_n, mut outcome_n) = (0usize, 0usize);
    let mut uniform_truth = 0.0;
    let mut logged = Vec::new();
    for chunk in people.chunks(a.batch) {
        let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
        let t0 = Instant::now();
        let r = call(
            &c,
            &key,
            post.clone(),
            format!("{}/v1/metrics/campaigns/{id}/decisions", a.url),
            &json!({"customers": ids}),
        )
        .await?;
        decide_time += t0.elapsed();
        decided_n += chunk.len();
        let mut outcomes = Vec::new();
        for item in r["items"].as_array().context("items")? {
            let d = &item["decision"];
            if item["status"] != "decided" || d["holdout"] == true {
                continue;
            }
            let p = by_id[d["customer_id"].as_str().context("customer")?];
            let ch = CHANNELS
                .iter()
                .position(|(n, _)| Some(*n) == d["channel"].as_str())
                .context("channel")?;
            let v = *variant_index
                .get(d["variant_id"].as_str().context("variant")?)
                .context("variant id")?;
            let Some((oc, ov)) = p.oracle() else { continue };
            let eligible = p.eligible();
            let mean_uniform = eligible
                .iter()
                .map(|&(c, v)| true_rate(p.segment, c, v))
                .sum::<f64>()
                / eligible.len() as f64;
            let best = true_rate(p.segment, oc, ov);
            let chosen = true_rate(p.segment, ch, v);
            oracle_conv += best;
            bandit_conv += chosen;
            uniform_conv += mean_uniform;
            regret_bandit += best - chosen;
            regret_uniform += best - mean_uniform;
            uniform_truth += mean_uniform;
            sent += 1;
            outcomes.push(json!({"decision_id": d["id"], "type": "delivered"}));
            if rng.next() < chosen {
                realised += 1;
                outcomes
                    .push(json!({"decision_id": d["id"], "type": "converted", "revenue": VALUE}));
            }
            logged.push(d["id"].clone());
        }
        for part in outcomes.chunks(1000) {
            let t0 = Instant::now();
            call(
                &c,
                &key,
                post.clone(),
                format!("{}/v1/metrics/outcomes/batch", a.url),
                &json!({"items": part}),
            )
            .await?;
            outcome_time += t0.elapsed();
            outcome_n += part.len();
        }
    }
    let reduction = 1.0 - regret_bandit / regret_uniform;
    println!(
        "## Campaign simulation ({} customers, {} sent, batches of {})",
        people.len(),
        sent,
        a.batch
    );
    println!("| policy | expected conversions | lost vs oracle (regret) |");
    println!("|---|---:|---:|");
    println!("| oracle | {oracle_conv:.1} | 0 |");
    println!("| bandit (Mercato) | {bandit_conv:.1} (realised {realised}) | {regret_bandit:.1} |");
    println!("| uniform | {uniform_conv:.1} | {regret_uniform:.1} |");
    println!(
        "regret reduction vs uniform: {:.1}% (target >= 30%)",
        100.0 * reduction
    );

    // Off-policy evaluation by the server, against the simulated truth.
    let ope = call(
        &c,
        &key,
        reqwest::Method::GET,
        format!("{}/v1/metrics/campaigns/{id}/policy-evaluation", a.url),
        &Value::Null,
    )
    .await?;
    let truth_uniform = uniform_truth / sent.max(1) as f64;
    let truth_logging = bandit_conv / sent.max(1) as f64;
    println!("| policy | truth | IPS [95% CI] | SNIPS [95% CI] | truth inside |");
    println!("|---|---:|---:|---:|---|");
    for p in ope["policies"].as_array().context("policies")? {
        let name = p["policy"].as_str().unwrap_or("?");
        let truth = match name {
            "uniform" => Some(truth_uniform),
            "logging" => Some(truth_logging),
            _ => None,
        };
        let fmt = |e: &Value| {
            format!(
                "{:.5} [{:.5}, {:.5}]",
                e["value"].as_f64().unwrap_or(f64::NAN),
                e["ci_low"].as_f64().unwrap_or(f64::NAN),
                e["ci_high"].as_f64().unwrap_or(f64::NAN)
            )
        };
        let inside = |e: &Value, t: f64| {
            e["ci_low"].as_f64().is_some_and(|l| l <= t)
                && e["ci_high"].as_f64().is_some_and(|h| h >= t)
        };
        match truth {
            Some(t) => println!(
                "| {name} | {t:.5} | {} | {} | IPS {} / SNIPS {} |",
                fmt(&p["ips"]),
                fmt(&p["snips"]),
                inside(&p["ips"], t),
                inside(&p["snips"], t)
            ),
            None => println!(
                "| {name} | (oracle {:.5}) | {} | {} | — |",
                oracle_conv / sent.max(1) as f64,
                fmt(&p["ips"]),
                fmt(&p["snips"])
            ),
        }
    }

    // Throughput: the decision loop above (sequential, one client), then a second campaign
    // decided by several clients at once, then outcomes posted by several clients.
    println!(
        "decisions/s in the loop (1 client, batches of {}): {:.0}",
        a.batch,
        decided_n as f64 / decide_time.as_secs_f64()
    );
    println!(
        "outcomes/s in the loop (batches of up to 1000): {:.0}",
        outcome_n as f64 / outcome_time.as_secs_f64()
    );
    let second = call(
        &c,
        &key,
        post.clone(),
        format!("{}/v1/metrics/campaigns", a.url),
        &campaign("throughput"),
    )
    .await?;
    let id2 = second["id"].as_str().context("campaign id")?.to_owned();
    call(
        &c,
        &key,
        post.clone(),
        format!("{}/v1/metrics/campaigns/{id2}/status", a.url),
        &json!({"status": "running"}),
    )
    .await?;
    let chunks: Vec<Vec<String>> = people
        .chunks(a.batch)
        .map(|ch| ch.iter().map(|p| p.id.clone()).collect())
        .collect();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..a.clients {
        let mine: Vec<Vec<String>> = chunks.iter().skip(k).step_by(a.clients).cloned().collect();
        let (c, key, url) = (
            c.clone(),
            key.clone(),
            format!("{}/v1/metrics/campaigns/{id2}/decisions", a.url),
        );
        tasks.spawn(async move {
            for ids in mine {
                call(
                    &c,
                    &key,
                    reqwest::Method::POST,
                    url.clone(),
                    &json!({"customers": ids}),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!(
        "decisions/s with {} clients (batches of {}): {:.0}",
        a.clients,
        a.batch,
        people.len() as f64 / t0.elapsed().as_secs_f64()
    );
    let opened: Vec<Value> = logged
        .iter()
        .map(|id| json!({"decision_id": id, "type": "opened"}))
        .collect();
    let parts: Vec<Vec<Value>> = opened.chunks(1000).map(<[Value]>::to_vec).collect();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..a.clients {
        let mine: Vec<Vec<Value>> = parts.iter().skip(k).step_by(a.clients).cloned().collect();
        let (c, key, url) = (
            c.clone(),
            key.clone(),
            format!("{}/v1/metrics/outcomes/batch", a.url),
        );
        tasks.spawn(async move {
            for items in mine {
                call(
                    &c,
                    &key,
                    reqwest::Method::POST,
                    url.clone(),
                    &json!({"items": items}),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!(
        "outcomes/s with {} clients (batches of 1000): {:.0}",
        a.clients,
        opened.len() as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}
