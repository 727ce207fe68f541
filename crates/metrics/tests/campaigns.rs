//! Campaigns through the HTTP API on real Postgres: lifecycle and validation, the
//! decision-outcome loop moving traffic to the better variant, consent, budget and
//! frequency caps, metrics (snapshot and stream), analysis, policy evaluation, the
//! optimiser, attribution and erasure.

mod support;

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::Api;

/// A deterministic stream of uniform numbers for simulated responses.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` customers; even ones accept SMS, everyone email; tier alternates gold / basic.
async fn population(api: &Api, n: usize) -> Vec<String> {
    let items = (0..n)
        .map(|i| {
            json!({"external_id": format!("c{i}"),
                   "consent": {"email": true, "sms": i % 2 == 0},
                   "traits": {"tier": if i % 2 == 0 { "gold" } else { "basic" }}})
        })
        .collect();
    api.customers(items).await
}

fn campaign(extra: Value) -> Value {
    let mut base = json!({
        "name": "Spring",
        "goal": {"kind": "conversion", "value_per_conversion": 10.0},
        "channels": [{"channel": "email", "cost": 0.01}, {"channel": "sms", "cost": 0.05}],
        "variants": [
            {"name": "A", "content": {"subject": "Hello", "body": "Plain offer"}},
            {"name": "B", "content": {"subject": "Your picks", "body": "Better offer"}}
        ],
        "seed": 7
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn decided(batch: &Value) -> Vec<Value> {
    batch["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["status"] == "decided")
        .map(|i| i["decision"].clone())
        .collect()
}

async fn wait_for_job(pool: &PgPool, tenant: uuid::Uuid, id: &str) -> Value {
    let id: uuid::Uuid = id.parse().expect("job id");
    for _ in 0..200 {
        let job = mercato_platform::jobs::queue::get(pool, tenant, id)
            .await
            .expect("job read")
            .expect("job exists");
        if job.status.is_terminal() {
            return serde_json::to_value(&job).expect("job json");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn the_loop_moves_traffic_to_the_better_variant(pool: PgPool) {
    let api = Api::start(&pool).await;
    let ids = population(&api, 600).await;
    let (status, segment) = api
        .post(
            "/v1/profiling/segments",
            &json!({"name": "reachable", "rule": {"field": "consent.email", "op": "eq", "value": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{segment}");
    let c = api
        .create_campaign(campaign(json!({
            "segment_id": segment["id"], "context_by": "trait:tier", "holdout_share": 0.2,
            "budget": 1000.0,
            "optimisation": {"enabled": true, "interval_secs": 3600, "pause_below": 0.05,
                             "min_sends": 20, "exploration": 0.05},
            // A was generated from a brief: when it loses, the optimiser asks for a fresh one.
            "variants": [
                {"name": "A", "content": {"subject": "Hello", "body": "Plain offer"},
                 "provenance": {"model": "SmolLM2", "request": {"channel": "email", "brief": "Spring offer", "count": 1}}},
                {"name": "B", "content": {"subject": "Your picks", "body": "Better offer"}}
            ]
        })))
        .await;
    let id = c["id"].as_str().expect("id").to_owned();
    assert_eq!(c["status"], "draft");
    let (status, started) = api.set_status(&id, "running").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["audience"]["size"], 600);
    let holdout = started["audience"]["holdout"].as_i64().expect("holdout");
    assert!(
        (60..=180).contains(&holdout),
        "holdout {holdout} of 600 at 20%"
    );

    // Variant B converts at 40%, A at 4%, on either channel.
    let mut rng = Lcg(11);
    let b_id = c["variants"][1]["id"].as_str().expect("variant").to_owned();
    let mut shares = Vec::new();
    let mut all = Vec::new();
    for round in ids.chunks(100) {
        let batch = api.decide(&id, round).await;
        assert_eq!(batch["rejected"], 0, "{batch}");
        let ds = decided(&batch);
        let mut outcomes = Vec::new();
        let mut b = 0;
        let mut sent = 0;
        for d in &ds {
            let index: usize = ids
                .iter()
                .position(|c| Some(c.as_str()) == d["customer_id"].as_str())
                .expect("known customer");
            if d["holdout"] == true {
                assert!(d["channel"].is_null() && d["variant_id"].is_null(), "{d}");
                if rng.next() < 0.02 {
                    outcomes.push(
                        json!({"decision_id": d["id"], "type": "converted", "revenue": 20.0}),
                    );
                }
                continue;
            }
            sent += 1;
            let p = d["probability"].as_f64().expect("probability");
            assert!(p > 0.0 && p <= 1.0, "{d}");
            if index % 2 == 1 {
                assert_eq!(d["channel"], "email", "no SMS consent: {d}");
            }
            assert_eq!(
                d["context"],
                if index.is_multiple_of(2) {
                    "gold"
                } else {
                    "basic"
                }
            );
            let is_b = d["variant_id"] == b_id.as_str();
            b += usize::from(is_b);
            outcomes.push(json!({"decision_id": d["id"], "type": "delivered"}));
            if rng.next() < if is_b { 0.4 } else { 0.04 } {
                outcomes
                    .push(json!({"decision_id": d["id"], "type": "converted", "revenue": 20.0}));
            }
        }
        shares.push(b as f64 / sent.max(1) as f64);
        let result = api.outcomes(outcomes).await;
        assert_eq!(result["rejected"], 0, "{result}");
        all.extend(ds);
    }
    assert!(
        shares[5] > 0.75 && shares[5] > shares[0],
        "traffic should move to B: {shares:?}"
    );

    // Asking again returns the same decisions.
    let again = api.decide(&id, &ids[..10]).await;
    assert_eq!(again["existing"], 10, "{again}");
    for item in again["items"].as_array().expect("items") {
        let first = all
            .iter()
            .find(|d| d["customer_id"] == item["customer_id"])
            .expect("decided before");
        assert_eq!(item["decision"]["id"], first["id"]);
        assert_eq!(item["decision"]["variant_id"], first["variant_id"]);
    }

    // Metrics agree with what was logged.
    let (status, m) = api
        .get(&format!("/v1/metrics/campaigns/{id}/metrics"))
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let treated = all.iter().filter(|d| d["holdout"] == false).count() as i64;
    assert_eq!(m["treated"]["sends"], treated);
    assert_eq!(m["treated"]["delivered"], treated);
    assert_eq!(m["holdout"]["sends"], holdout);
    assert_eq!(m["by_variant"].as_array().expect("variants").len(), 2);
    let spent = m["spent"].as_f64().expect("spent");
    let cost = m["treated"]["cost"].as_f64().expect("cost");
    assert!((spent - cost).abs() < 1e-6, "{spent} vs {cost}");
    let lift = &m["lift"];
    assert!(lift["diff"].as_f64().expect("lift") > 0.1, "{lift}");
    let conversions = m["treated"]["conversions"].as_f64().expect("conversions");
    assert_eq!(m["treated"]["value"].as_f64(), Some(conversions * 10.0));

    // Analysis: B beats A clearly; the holdout split is as configured.
    let (status, a) = api
        .get(&format!("/v1/metrics/campaigns/{id}/analysis"))
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let b = &a["variants"][1];
    assert!(b["prob_best"].as_f64().expect("prob best") > 0.95, "{a}");
    assert!(
        b["vs_baseline"]["conversion"]["p_value"]
            .as_f64()
            .expect("p")
            < 0.01,
        "{a}"
    );
    assert!(b["vs_baseline"]["prob_beats_control"].as_f64().expect("p") > 0.95);
    assert_eq!(a["srm"]["mismatch"], false, "{a}");
    assert!(
        a["vs_holdout"]["conversion"]["diff"]
            .as_f64()
            .expect("diff")
            > 0.0
    );

    // Off-policy: always-best is estimated above uniform.
    let (status, ope) = api
        .get(&format!("/v1/metrics/campaigns/{id}/policy-evaluation"))
        .await;
    assert_eq!(status, StatusCode::OK, "{ope}");
    let estimate = |name: &str| {
        ope["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .find(|p| p["policy"] == name)
            .and_then(|p| p["snips"]["value"].as_f64())
            .expect("estimate")
    };
    assert!(estimate("best") > estimate("uniform"), "{ope}");
    let observed = ope["observed_mean_reward"].as_f64().expect("observed");
    assert!((estimate("logging") - observed).abs() < 1e-9, "{ope}");

    // The optimiser pauses A and keeps the campaign running.
    let (status, job) = api
        .post(&format!("/v1/metrics/campaigns/{id}/optimise"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = wait_for_job(&pool, api.tenant_id, job["id"].as_str().expect("job")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, after) = api.get(&format!("/v1/metrics/campaigns/{id}")).await;
    assert_eq!(after["status"], "running");
    assert_eq!(after["variants"][0]["status"], "paused", "{after}");
    assert_eq!(after["variants"][1]["status"], "active");
    // ...and, A being generated, asks the content service for a replacement from its brief.
    let requested: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM platform.jobs WHERE tenant_id = $1 AND kind = 'content.campaign_variants'",
    )
    .bind(api.tenant_id)
    .fetch_all(&pool)
    .await
    .expect("jobs");
    assert_eq!(requested.len(), 1, "{job}");
    assert_eq!(
        requested[0]["replaces"]["variant_id"],
        after["variants"][0]["id"]
    );
    assert_eq!(requested[0]["request"]["brief"], "Spring offer");
    assert_eq!(requested[0]["count"], 1);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn bad_input_is_named_and_writes_nothing(pool: PgPool) {
    let api = Api::start(&pool).await;
    let ids = population(&api, 10).await;

    let (status, body) = api
        .post(
            "/v1/metrics/campaigns",
            &campaign(json!({
                "channels": [{"channel": "fax", "cost": -1}],
                "variants": [{"name": "A"}],
                "holdout_share": 0.9, "budget": -5
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "channels[0].channel",
            "channels[0].cost",
            "variants[0].content",
            "holdout_share",
            "budget"
        ]
    );
    let (status, body) = api
        .post(
            "/v1/metrics/campaigns",
            &campaign(json!({"segment_id": uuid::Uuid::now_v7()})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "segment_id");
    let (status, body) = api
        .post(
            "/v1/metrics/campaigns",
            &json!({"name": "x", "goal": {"kind": "clicks"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "goal.kind");

    let c = api.create_campaign(campaign(json!({}))).await;
    let id = c["id"].as_str().expect("id");
    // Not running: no decisions, no pausing.
    let (status, body) = api
        .post(
            &format!("/v1/metrics/campaigns/{id}/decisions"),
            &json!({"customers": [ids[0]]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = api.set_status(id, "paused").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api.set_status(id, "running").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            &format!("/v1/metrics/campaigns/{id}/decisions"),
            &json!({"customers": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "customers");

    // Unknown and repeated customers are rejected item by item; the rest decided.
    let stranger = uuid::Uuid::now_v7().to_string();
    let batch = api
        .decide(id, &[ids[0].clone(), stranger.clone(), ids[0].clone()])
        .await;
    assert_eq!(batch["decided"], 1, "{batch}");
    assert_eq!(batch["rejected"], 2);
    assert_eq!(batch["items"][1]["errors"][0]["field"], "customers[1]");
    assert_eq!(
        batch["items"][1]["errors"][0]["message"],
        "is not a customer"
    );
    assert_eq!(batch["items"][2]["errors"][0]["message"], "is listed twice");
    let decision = batch["items"][0]["decision"].clone();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM metrics.decisions")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    assert_eq!(count().await, 1);

    // Outcomes: unknown decision, revenue where none belongs, retries and conflicts.
    let (status, body) = api
        .post(
            "/v1/metrics/outcomes",
            &json!({"decision_id": stranger, "type": "opened"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .post(
            "/v1/metrics/outcomes",
            &json!({"decision_id": decision["id"], "type": "opened", "revenue": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "revenue");
    let conversion = json!({"decision_id": decision["id"], "type": "converted", "revenue": 12.5});
    let (status, body) = api.post("/v1/metrics/outcomes", &conversion).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.post("/v1/metrics/outcomes", &conversion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "duplicate");
    let (status, body) = api
        .post(
            "/v1/metrics/outcomes",
            &json!({"decision_id": decision["id"], "type": "converted", "revenue": 99}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let batch = api
        .outcomes(vec![
            json!({"decision_id": decision["id"], "type": "clicked"}),
            json!({"decision_id": decision["id"], "type": "bounced"}),
            json!({"decision_id": stranger, "type": "clicked"}),
            json!({"decision_id": decision["id"], "type": "converted", "revenue": -1}),
        ])
        .await;
    assert_eq!(batch["accepted"], 1, "{batch}");
    assert_eq!(batch["items"][1]["errors"][0]["field"], "items[1].type");
    assert_eq!(
        batch["items"][2]["errors"][0]["field"],
        "items[2].decision_id"
    );
    assert_eq!(batch["items"][3]["errors"][0]["field"], "items[3].revenue");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM metrics.outcomes")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 2, "one conversion and one click");
    let (_, m) = api
        .get(&format!("/v1/metrics/campaigns/{id}/metrics"))
        .await;
    assert_eq!(
        m["treated"]["conversions"].as_i64().unwrap_or(0)
            + m["holdout"]["conversions"].as_i64().unwrap_or(0),
        1
    );

    // Bad parameters of the reports.
    let (status, _) = api
        .get(&format!("/v1/metrics/campaigns/{id}/analysis?confidence=2"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .get("/v1/metrics/attribution?model=time_decay&half_life_hours=-3")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "half_life_hours");
    let (status, body) = api
        .post(
            "/v1/metrics/budget/allocate",
            &json!({"budget": -1, "goal": "conversion", "channels": [{"channel": "email", "cost": 0}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "budget");
    assert_eq!(body["errors"][1]["field"], "channels[0].cost");

    // Completed is final; a campaign that ran cannot be deleted.
    let (status, _) = api.set_status(id, "completed").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.set_status(id, "running").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .send(Method::DELETE, &format!("/v1/metrics/campaigns/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .post(
            &format!("/v1/metrics/campaigns/{id}/decisions"),
            &json!({"customers": [ids[1]]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(count().await, 1);

    // Another tenant sees nothing.
    let other =
        mercato_platform::testing::tenant_with_key(&pool, mercato_platform::auth::Role::Writer)
            .await;
    let r = api
        .server
        .client
        .get(api.server.url(&format!("/v1/metrics/campaigns/{id}")))
        .bearer_auth(&other.key)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn budget_and_frequency_caps_hold(pool: PgPool) {
    let api = Api::start(&pool).await;
    let ids = population(&api, 20).await;
    let c = api
        .create_campaign(campaign(json!({
            "channels": [{"channel": "email", "cost": 0.01}], "budget": 0.05
        })))
        .await;
    let id = c["id"].as_str().expect("id");
    api.set_status(id, "running").await;
    let batch = api.decide(id, &ids).await;
    assert_eq!(batch["decided"], 5, "{batch}");
    assert_eq!(batch["skipped"], 15);
    assert_eq!(batch["items"][19]["reason"], "budget_exhausted");

    // A second campaign with one message per day: the five just messaged are capped.
    let c2 = api
        .create_campaign(campaign(json!({
            "name": "Follow-up", "channels": [{"channel": "email", "cost": 0.01}],
            "frequency_cap": {"max": 1, "per_hours": 24}
        })))
        .await;
    let id2 = c2["id"].as_str().expect("id");
    api.set_status(id2, "running").await;
    let batch = api.decide(id2, &ids).await;
    assert_eq!(batch["skipped"], 5, "{batch}");
    assert_eq!(batch["decided"], 15);
    for item in batch["items"].as_array().expect("items") {
        if item["status"] == "skipped" {
            assert_eq!(item["reason"], "frequency_cap");
        }
    }

    // SMS only, and nobody odd consented to it.
    let c3 = api
        .create_campaign(campaign(json!({
            "name": "Texts", "channels": [{"channel": "sms", "cost": 0.05}]
        })))
        .await;
    let id3 = c3["id"].as_str().expect("id");
    api.set_status(id3, "running").await;
    let batch = api.decide(id3, &ids[..4]).await;
    assert_eq!(
        batch["items"][1]["reason"], "no_consented_channel",
        "{batch}"
    );
    assert_eq!(batch["items"][0]["status"], "decided");

    // A budget plan over the two channels, from the evidence so far.
    let (status, plan) = api
        .post(
            "/v1/metrics/budget/allocate",
            &json!({"budget": 1.0, "goal": "conversion", "seed": 3,
                    "channels": [{"channel": "email", "cost": 0.01}, {"channel": "sms", "cost": 0.05}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let lines = plan["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["audience"], 20);
    assert_eq!(lines[1]["audience"], 10);
    let total: f64 = lines.iter().filter_map(|l| l["spend"].as_f64()).sum();
    assert!((total - 1.0).abs() < 1e-9, "{plan}");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn live_metrics_attribution_and_erasure(pool: PgPool) {
    let api = Api::start(&pool).await;
    let ids = population(&api, 4).await;
    let c = api
        .create_campaign(campaign(
            json!({"channels": [{"channel": "email", "cost": 0.01}]}),
        ))
        .await;
    let id = c["id"].as_str().expect("id");
    api.set_status(id, "running").await;
    let ds = decided(&api.decide(id, &ids).await);
    assert_eq!(ds.len(), 4);

    // The stream sends a snapshot, then another once an outcome arrives.
    let response = api
        .server
        .client
        .get(
            api.server
                .url(&format!("/v1/metrics/campaigns/{id}/metrics/stream")),
        )
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).expect("json event");
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("event in time")
                .expect("stream open")
                .expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let first = next_event().await;
    assert_eq!(first["treated"]["conversions"], 0);
    api.outcomes(vec![
        json!({"decision_id": ds[0]["id"], "type": "converted", "revenue": 30}),
    ])
    .await;
    let second = next_event().await;
    assert_eq!(second["treated"]["conversions"], 1, "{second}");

    // A purchase after the message is credited to the campaign's email.
    let external = "c0";
    let (status, body) = api
        .post(
            "/v1/profiling/events",
            &json!({"event_id": "p1", "customer_id": external, "type": "purchase",
                    "timestamp": chrono::Utc::now().to_rfc3339(),
                    "revenue": 30, "currency": "EUR"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    for model in ["last_touch", "linear", "time_decay", "first_touch"] {
        let (status, report) = api
            .get(&format!(
                "/v1/metrics/attribution?model={model}&campaign_id={id}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["attributed"], 1, "{report}");
        assert_eq!(report["lines"][0]["channel"], "email");
        assert_eq!(report["lines"][0]["conversions"], 1.0);
        assert_eq!(report["lines"][0]["revenue"], 30.0);
    }

    // Erasing the customer removes their decisions and outcomes here too.
    let (admin, _) = mercato_platform::testing::key_for(
        &pool,
        api.tenant_id,
        mercato_platform::auth::Role::Admin,
    )
    .await;
    let r = api
        .server
        .client
        .delete(
            api.server
                .url(&format!("/v1/profiling/customers/{}", ids[0])),
        )
        .bearer_auth(&admin)
        .send()
        .await
        .expect("erase");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{body}");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM metrics.decisions WHERE customer_id = $1::uuid")
            .bind(&ids[0])
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(left, 0);
}
