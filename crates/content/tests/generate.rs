//! Generation through the HTTP API with the real default model on real Postgres: copy for a
//! stored customer (consent decides which profile fields reach the prompt), guardrails and the
//! template fallback, streaming, templates, the OpenAI-compatible route and bad input.

use std::sync::Arc;

use futures::StreamExt;
use mercato_platform::{
    auth::Role,
    service::{standalone_app, start_jobs},
    testing::{self, TestServer, tenant_with_key},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

struct Api {
    server: TestServer,
    key: String,
    tenant_id: uuid::Uuid,
    /// Job workers (bulk generation, product embeddings); stopped with the test.
    _jobs: (tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>),
}

impl Api {
    async fn start(pool: &PgPool) -> Self {
        let settings = Arc::new(testing::settings());
        let profiling = mercato_profiling::parts(pool.clone(), settings.clone())
            .await
            .expect("profiling parts");
        let content = mercato_content::parts(pool.clone(), settings.clone())
            .await
            .expect("content parts");
        let metrics = mercato_metrics::parts(pool.clone(), settings.clone())
            .await
            .expect("metrics parts");
        let (engine, embedder) = mercato_content::models(&settings.content).expect("models");
        engine
            .wait_ready(std::time::Duration::from_secs(120))
            .expect("the default model loads (scripts/fetch-models)");
        embedder
            .wait_ready(std::time::Duration::from_secs(120))
            .expect("the embedding model loads (scripts/fetch-models)");
        let handlers = profiling
            .jobs
            .iter()
            .chain(&content.jobs)
            .cloned()
            .collect();
        let jobs = start_jobs(&settings, pool, handlers);
        let server = TestServer::spawn(standalone_app(
            &settings,
            pool,
            vec![profiling, content, metrics],
        ))
        .await;
        let tenant = tenant_with_key(pool, Role::Writer).await;
        Api {
            server,
            key: tenant.key,
            tenant_id: tenant.id,
            _jobs: jobs,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .server
            .client
            .request(method, self.server.url(path))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// A customer with a purchase history in "outdoor"; returns its id.
    async fn customer(&self, external_id: &str, consent_ai: bool) -> String {
        let (s, b) = self
            .post(
                "/v1/profiling/customers",
                &json!({"external_id": external_id, "first_name": "Ada", "email": format!("{external_id}@example.com"),
                        "consent": {"email": true, "ai_personalization": consent_ai}}),
            )
            .await;
        assert!(s.is_success(), "{s} {b}");
        let id = b["id"].as_str().expect("customer id").to_string();
        let (s, b) = self
            .post(
                "/v1/profiling/events",
                &json!({"event_id": format!("buy-{external_id}"), "customer_id": external_id, "type": "purchase",
                        "timestamp": chrono::Utc::now().to_rfc3339(), "product_ids": ["tent-1"],
                        "revenue": 199.0, "currency": "EUR"}),
            )
            .await;
        assert!(s.is_success(), "{s} {b}");
        id
    }

    async fn products(&self) {
        let (s, b) = self
            .post(
                "/v1/profiling/products",
                &json!({"items": [
                    {"product_id": "tent-1", "title": "Summit Tent", "category": "outdoor", "price": 199.0, "currency": "EUR"},
                    {"product_id": "boots-2", "title": "Ridge Hiking Boots", "category": "outdoor", "price": 129.5, "currency": "EUR"}
                ]}),
            )
            .await;
        assert!(s.is_success(), "{s} {b}");
    }
}

fn fields_of(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn copy_for_a_customer_is_checked_and_explained(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.products().await;
    let with = api.customer("ada", true).await;
    let without = api.customer("bob", false).await;

    let req = |id: &str| {
        json!({"customer_id": id, "channel": "sms", "brief": "Invite them back to see new hiking gear",
               "product_ids": ["boots-2"], "variants": 2, "voice": {"tone": "friendly", "avoid_words": ["cheap"]},
               "sampling": {"seed": 11, "max_tokens": 60}})
    };
    let (s, b) = api.post("/v1/content/generate", &req(&with)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let variants = b["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2);
    for v in variants {
        // Every variant reports every guardrail, and what it sends passed them (model copy)
        // or is the template, marked as such.
        assert_eq!(v["checks"].as_array().map(Vec::len), Some(8), "{v}");
        let source = v["source"].as_str().expect("source");
        assert!(source == "model" || source == "template");
        if source == "model" {
            assert_eq!(v["passed"], true);
            assert!(v["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);
        } else {
            assert_eq!(v["provenance"]["template"], "builtin");
            assert!(v["rejected_text"].is_string());
        }
        assert!(
            v["fields"]["body"]
                .as_str()
                .is_some_and(|t| !t.is_empty() && t.chars().count() <= 160),
            "{v}"
        );
        assert_eq!(
            v["provenance"]["prompt_version"]
                .as_str()
                .map(|p| p.starts_with("copy-")),
            Some(true)
        );
        assert!(
            v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
            "the model was asked: {v}"
        );
        // Consent to AI personalisation: the profile reached the prompt.
        let used: Vec<&str> = v["provenance"]["profile_fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            used.contains(&"first_name") && used.contains(&"interests"),
            "{used:?}"
        );
    }
    // The same request and seed give the same variants.
    let (_, again) = api.post("/v1/content/generate", &req(&with)).await;
    assert_eq!(again["variants"][0]["fields"], b["variants"][0]["fields"]);
    assert_ne!(
        b["variants"][0]["provenance"]["seed"],
        b["variants"][1]["provenance"]["seed"]
    );

    // Without consent, no profile field reaches the prompt.
    let (s, b) = api.post("/v1/content/generate", &req(&without)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["variants"][0]["provenance"]["profile_fields"], json!([]));
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn failing_copy_falls_back_to_the_tenant_template(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.products().await;
    // A template set by the tenant.
    let (s, b) = api
        .put("/v1/content/templates/push", &json!({"fields": {"title": "News for you", "body": "Hi {{ customer.first_name | default: 'there' }}! {{ products[0].title }} is in stock."}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .put(
            "/v1/content/templates/push",
            &json!({"fields": {"title": "{{ broken", "body": "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(fields_of(&b), ["fields.title"]);
    let (s, b) = api.get("/v1/content/templates").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.as_array().map(Vec::len), Some(5));

    // A limit no model output can meet: one attempt, then the template speaks.
    let (s, b) = api
        .post(
            "/v1/content/generate",
            &json!({"profile": {"first_name": "Ada"}, "channel": "push", "brief": "New boots",
                    "product_ids": ["boots-2"], "max_attempts": 1,
                    "sampling": {"max_tokens": 1, "seed": 3}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v = &b["variants"][0];
    assert_eq!(v["source"], "template", "{v}");
    assert_eq!(v["provenance"]["template"], "tenant");
    assert_eq!(
        v["fields"]["body"],
        "Hi Ada! Ridge Hiking Boots is in stock."
    );
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["finish_reason"], "length");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn streaming_openai_route_and_bad_input(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.products().await;

    // Streaming generation: tokens arrive before the final variant.
    let r = api
        .server
        .client
        .post(api.server.url("/v1/content/generate"))
        .bearer_auth(&api.key)
        .header("accept", "text/event-stream")
        .json(&json!({"channel": "social", "brief": "Our autumn hiking collection is here", "sampling": {"max_tokens": 40, "seed": 5}, "max_attempts": 1}))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = String::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    let token_at = body.find("event: token").expect("token events");
    let done_at = body.find("event: done").expect("done event");
    assert!(token_at < done_at);
    assert!(body.contains("event: variant"));

    // OpenAI-compatible chat completion, plain and streamed.
    let chat = json!({"model": "anything", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0});
    let (s, b) = api.post("/v1/chat/completions", &chat).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    let text = b["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(!text.is_empty());
    assert!(
        b["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=8).contains(&n))
    );
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let r = api
        .server
        .client
        .post(api.server.url("/v1/chat/completions"))
        .bearer_auth(&api.key)
        .json(&streamed)
        .send()
        .await
        .expect("stream");
    let sse = r.text().await.expect("body");
    let pieces: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(pieces, text, "greedy streamed text equals the plain answer");
    assert!(sse.trim_end().ends_with("data: [DONE]"));

    // A client that hangs up mid-stream cancels its sequence in the worker.
    let cancelled = |model: &Value| model["worker"]["cancelled"].as_u64().expect("cancelled");
    let (_, before) = api.get("/v1/content/model").await;
    let mut long = streamed.clone();
    long["max_tokens"] = json!(400);
    long["messages"][0]["content"] = json!("Write a long story about a mountain trail.");
    let r = api
        .server
        .client
        .post(api.server.url("/v1/chat/completions"))
        .bearer_auth(&api.key)
        .json(&long)
        .send()
        .await
        .expect("stream");
    let mut stream = r.bytes_stream();
    stream.next().await.expect("a first chunk").expect("chunk");
    drop(stream);
    let mut after = before.clone();
    for _ in 0..300 {
        after = api.get("/v1/content/model").await.1;
        if cancelled(&after) > cancelled(&before) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        cancelled(&after),
        cancelled(&before) + 1,
        "hanging up cancels the sequence: {after}"
    );

    // Bad input: 4xx problem+json naming the fields, nothing generated.
    let (s, b) = api
        .post(
            "/v1/content/generate",
            &json!({"channel": "fax", "brief": "", "variants": 9, "product_ids": ["nope"],
                    "customer_id": "00000000-0000-7000-8000-000000000000",
                    "sampling": {"temperature": 5.0, "max_tokens": 100000}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let f = fields_of(&b);
    for want in [
        "channel",
        "brief",
        "variants",
        "sampling.temperature",
        "sampling.max_tokens",
        "customer_id",
        "product_ids[0]",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
    }
    let (s, b) = api
        .post("/v1/chat/completions", &json!({"messages": [], "n": 2}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(fields_of(&b), ["messages", "n"]);
    let (s, b) = api
        .post("/v1/content/generate", &json!({"channel": "sms"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields_of(&b), ["brief"]);
    let (s, b) = api.get("/v1/content/templates/fax").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    // The worker's figures.
    let (s, b) = api.get("/v1/content/model").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["model"]["architecture"], "llama");
    assert!(b["worker"]["decode_tokens"].as_u64().unwrap_or(0) > 0);
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let a: Vec<f64> = a
        .as_array()
        .expect("vector")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let b: Vec<f64> = b
        .as_array()
        .expect("vector")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn embeddings_recommendations_and_bulk_generation(pool: PgPool) {
    let api = Api::start(&pool).await;

    // Embeddings against the published sentence-transformers example for all-MiniLM-L6-v2
    // (the sentence-transformers README, "Usage": cosine similarities 0.6660, 0.1046, 0.1411).
    let texts = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    let (s, b) = api
        .post("/v1/content/embeddings", &json!({"input": texts}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Vec<Value> = b["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["embedding"].clone())
        .collect();
    assert_eq!(v[0].as_array().map(Vec::len), Some(384));
    assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-4, "unit length");
    for (i, j, want) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&v[i], &v[j]);
        assert!(
            (got - want).abs() < 0.005,
            "sim({i},{j}) = {got}, published {want}"
        );
    }
    // Packed beside other texts or alone, a text gets the same vector.
    let (_, alone) = api
        .post("/v1/content/embeddings", &json!({"input": texts[1]}))
        .await;
    assert!((cosine(&alone["data"][0]["embedding"], &v[1]) - 1.0).abs() < 1e-5);
    let (s, b) = api
        .post("/v1/content/embeddings", &json!({"input": ["ok", ""]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields_of(&b), ["input[1]"]);

    // Recommendations: a camper who viewed a tent and bought a stove.
    let (s, b) = api
        .post(
            "/v1/profiling/products",
            &json!({"items": [
                {"product_id": "tent", "title": "Summit Tent", "description": "Two-person backpacking tent for camping", "category": "camping", "price": 199.0, "currency": "EUR"},
                {"product_id": "bag", "title": "Down Sleeping Bag", "description": "Warm sleeping bag for camping trips", "category": "camping", "price": 149.0, "currency": "EUR"},
                {"product_id": "stove", "title": "Camp Stove", "description": "Compact gas stove for camping", "category": "camping", "price": 59.0, "currency": "EUR"},
                {"product_id": "lamp", "title": "Desk Lamp", "description": "LED lamp for the home office", "category": "home", "price": 39.0, "currency": "EUR"},
                {"product_id": "mat", "title": "Sleeping Mat", "description": "Inflatable mat for camping", "category": "camping", "price": 49.0, "currency": "EUR", "in_stock": false}
            ]}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let camper = api.customer("camper", true).await;
    let now = chrono::Utc::now();
    for (id, kind, pid) in [("v1", "view", "tent"), ("p2", "purchase", "stove")] {
        let mut e = json!({"event_id": id, "customer_id": "camper", "type": kind, "timestamp": now.to_rfc3339(), "product_ids": [pid]});
        if kind == "purchase" {
            e["revenue"] = json!(59.0);
            e["currency"] = json!("EUR");
        }
        let (s, b) = api.post("/v1/profiling/events", &e).await;
        assert!(s.is_success(), "{b}");
    }
    let (s, b) = api
        .get(&format!(
            "/v1/content/customers/{camper}/recommendations?k=3"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let recs = b["recommendations"].as_array().expect("recommendations");
    let ids: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["product_id"].as_str())
        .collect();
    assert!(!ids.contains(&"stove"), "bought recently: {ids:?}");
    assert!(!ids.contains(&"mat"), "out of stock: {ids:?}");
    assert_eq!(ids.first(), Some(&"tent"), "{b}");
    assert!(
        ids.iter().position(|i| *i == "bag")
            < ids.iter().position(|i| *i == "lamp").or(Some(usize::MAX)),
        "{ids:?}"
    );
    assert!(
        recs.iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    assert_eq!(b["pending_products"], 0);
    // Templates can use the recommendations: the fallback for this customer names the top one,
    // and its catalog price passes the guardrails.
    let (s, t) = api
        .put(
            "/v1/content/templates/sms",
            &json!({"fields": {"body": "Picks for you: {{ recommendations[0].title }} at {{ recommendations[0].price }} {{ recommendations[0].currency }}."}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (s, g) = api
        .post(
            "/v1/content/generate",
            &json!({"customer_id": camper, "channel": "sms", "brief": "Camping picks", "max_attempts": 1,
                    "sampling": {"max_tokens": 1, "seed": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let v = &g["variants"][0];
    assert_eq!(v["source"], "template", "{v}");
    assert_eq!(
        v["fields"]["body"], "Picks for you: Summit Tent at 199.00 EUR.",
        "{v}"
    );
    assert_eq!(v["passed"], true, "{v}");
    let (s, _) = api
        .get(&format!(
            "/v1/content/customers/{camper}/recommendations?k=0"
        ))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = api
        .get("/v1/content/customers/00000000-0000-7000-8000-000000000000/recommendations")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Bulk: one message per member of a segment, stored with provenance.
    let (s, seg) = api
        .post("/v1/profiling/segments", &json!({"name": "everyone", "rule": {"field": "consent.email", "op": "eq", "value": true}}))
        .await;
    assert!(s.is_success(), "{seg}");
    let (s, job) = api
        .post(
            "/v1/content/generate/bulk",
            &json!({"segment_id": seg["id"], "channel": "push", "brief": "Camping season starts", "max_attempts": 1,
                    "sampling": {"max_tokens": 24, "seed": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job_id = job["id"].as_str().expect("job id").to_string();
    let finished = wait_job(&pool, api.tenant_id, &job_id).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let (s, page) = api
        .get(&format!("/v1/content/messages?job_id={job_id}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one member: {page}");
    assert_eq!(items[0]["customer_id"].as_str(), Some(camper.as_str()));
    assert!(items[0]["provenance"]["prompt_version"].is_string());
    assert_eq!(items[0]["channel"], "push");
    let (s, b) = api
        .post("/v1/content/generate/bulk", &json!({"segment_id": "00000000-0000-7000-8000-000000000000", "channel": "push", "brief": "x y z"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(fields_of(&b), ["segment_id"]);
}

async fn wait_job(pool: &PgPool, tenant: uuid::Uuid, id: &str) -> Value {
    let id: uuid::Uuid = id.parse().expect("uuid");
    for _ in 0..1200 {
        let j = mercato_platform::jobs::queue::get(pool, tenant, id)
            .await
            .expect("read")
            .expect("job");
        if j.status.is_terminal() {
            return serde_json::to_value(&j).expect("json");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn campaign_variants_are_generated_from_a_brief(pool: PgPool) {
    let api = Api::start(&pool).await;
    let (s, c) = api
        .post(
            "/v1/metrics/campaigns",
            &json!({"name": "Autumn", "goal": {"kind": "conversion", "value_per_conversion": 5.0},
                    "channels": [{"channel": "social", "cost": 0.0}],
                    "variants": [{"name": "control", "content": {"body": "Autumn walks start here."}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().expect("campaign id");
    let brief = json!({"channel": "social", "brief": "Invite followers to our autumn walking weekend", "count": 3,
                       "max_attempts": 2, "sampling": {"seed": 21, "max_tokens": 48}});
    let (s, job) = api
        .post(&format!("/v1/content/campaigns/{id}/variants"), &brief)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let done = wait_job(&pool, api.tenant_id, job["id"].as_str().expect("job id")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let added = done["result"]["added"].as_array().expect("added").len();
    let rejected = done["result"]["rejected"]
        .as_array()
        .expect("rejected")
        .len();
    assert_eq!(added + rejected, 3, "{done}");
    assert!(added >= 1, "nothing passed the guardrails: {done}");
    let (_, c) = api.get(&format!("/v1/metrics/campaigns/{id}")).await;
    let generated: Vec<&Value> = c["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter(|v| v["source"] == "generated")
        .collect();
    assert_eq!(generated.len(), added, "{c}");
    for v in generated {
        assert_eq!(
            v["provenance"]["request"]["brief"], brief["brief"],
            "the brief travels with it: {v}"
        );
        assert!(v["content"]["body"].as_str().is_some_and(|b| !b.is_empty()));
    }
    // A channel the campaign does not use, or too many variants: refused before any work.
    let (s, b) = api
        .post(
            &format!("/v1/content/campaigns/{id}/variants"),
            &json!({"channel": "sms", "brief": "Hello there", "count": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(fields_of(&b), ["channel"]);
    let (s, _) = api
        .post(
            "/v1/content/campaigns/00000000-0000-7000-8000-000000000000/variants",
            &brief,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_model_that_fails_to_load_fails_readiness_and_answers_503(pool: PgPool) {
    let mut settings = testing::settings();
    settings.content.model_path = "models/does-not-exist.gguf".into();
    settings.content.embedding_dir = "models/does-not-exist".into();
    let settings = Arc::new(settings);
    let content = mercato_content::parts(pool.clone(), settings.clone())
        .await
        .expect("content parts");
    let (engine, embedder) = mercato_content::models(&settings.content).expect("models");
    let why = engine
        .wait_ready(std::time::Duration::from_secs(30))
        .expect_err("a missing model cannot load");
    assert!(why.contains("does-not-exist"), "{why}");
    let why = embedder
        .wait_ready(std::time::Duration::from_secs(30))
        .expect_err("a missing embedding model cannot load");
    assert!(why.contains("does-not-exist"), "{why}");
    let server = TestServer::spawn(standalone_app(&settings, &pool, vec![content])).await;
    let tenant = tenant_with_key(&pool, Role::Writer).await;
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.expect("json");
    assert!(
        body["checks"]["language_model"]
            .as_str()
            .is_some_and(|c| c.contains("failed to load")),
        "{body}"
    );
    for (path, req) in [
        (
            "/v1/content/generate",
            json!({"channel": "sms", "brief": "Hello there"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        ),
        ("/v1/content/embeddings", json!({"input": "Hi"})),
    ] {
        let r = server
            .client
            .post(server.url(path))
            .bearer_auth(&tenant.key)
            .json(&req)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}"
        );
    }
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_full_queue_answers_429_with_retry_after(pool: PgPool) {
    // One slot and a queue of one: the third concurrent request finds no room.
    let mut settings = testing::settings();
    settings.content.max_batch = 1;
    settings.content.queue_capacity = 1;
    let settings = Arc::new(settings);
    let content = mercato_content::parts(pool.clone(), settings.clone())
        .await
        .expect("content parts");
    let (engine, _) = mercato_content::models(&settings.content).expect("models");
    engine
        .wait_ready(std::time::Duration::from_secs(120))
        .expect("model loads");
    let server = TestServer::spawn(standalone_app(&settings, &pool, vec![content])).await;
    let tenant = tenant_with_key(&pool, Role::Writer).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (client, url, key) = (
            server.client.clone(),
            server.url("/v1/chat/completions"),
            tenant.key.clone(),
        );
        calls.spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"messages": [{"role": "user", "content": format!("Count to {i}.")}], "max_tokens": 64, "temperature": 0}))
                .send()
                .await
                .expect("request")
        });
    }
    let mut ok = 0;
    let mut refused = 0;
    while let Some(r) = calls.join_next().await {
        let r = r.expect("join");
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
}
