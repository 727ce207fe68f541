//! Segments: the rule language compiled to SQL with every value bound, RFM agreeing
//! between profiles and segment rules, preview and paging.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Api, days_ago};

/// Ten buyers with 1..=10 purchases, the last one `11 - n` days ago.
async fn buyers(api: &Api) {
    let mut items = Vec::new();
    for n in 1..=10 {
        for k in 0..n {
            items.push(json!({"event_id": format!("c{n}-{k}"), "customer_id": format!("c{n}"), "type": "purchase",
                              "timestamp": days_ago(11 - n + 30 * k), "revenue": 10 * n, "currency": "EUR"}));
        }
    }
    api.events(json!(items)).await;
    api.post("/v1/profiling/customers/batch", &json!({"items": [
        {"external_id": "c1", "country": "DE", "consent": {"email": true}, "traits": {"plan": "gold", "age": 41}},
        {"external_id": "c2", "country": "FR", "consent": {"email": false}, "traits": {"plan": "silver", "age": "unknown"}},
        {"external_id": "c3", "country": "DE", "traits": {"plan": "x'); DROP TABLE profiling.customers; --"}},
        {"external_id": "idle"}
    ]}))
    .await;
}

async fn count(api: &Api, rule: Value) -> i64 {
    let (status, body) = api
        .post(
            "/v1/profiling/segments/preview",
            &json!({"rule": rule, "sample": 100}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["count"].as_i64().expect("count")
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn rules_select_the_right_customers(pool: PgPool) {
    let api = Api::start(&pool).await;
    buyers(&api).await;
    assert_eq!(
        count(&api, json!({"field": "country", "op": "eq", "value": "DE"})).await,
        2
    );
    assert_eq!(
        count(
            &api,
            json!({"not": {"field": "country", "op": "eq", "value": "DE"}})
        )
        .await,
        9
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "consent.email", "op": "eq", "value": true})
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "traits.plan", "op": "in", "value": ["gold", "silver"]})
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "traits.age", "op": "gt", "value": 40})
        )
        .await,
        1,
        "non-numeric traits do not match"
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "profile.frequency", "op": "gte", "value": 8})
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &api,
            json!({"event": "purchase", "within_days": 6, "op": "gte", "count": 1})
        )
        .await,
        5
    );
    assert_eq!(
        count(&api, json!({"any": [{"field": "country", "op": "eq", "value": "FR"}, {"field": "profile.monetary", "op": "gt", "value": 900}]})).await,
        2
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "profile.frequency", "op": "exists", "value": true})
        )
        .await,
        11
    );
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn rule_values_are_data_never_sql(pool: PgPool) {
    let api = Api::start(&pool).await;
    buyers(&api).await;
    let hostile = "x'); DROP TABLE profiling.customers; --";
    assert_eq!(
        count(
            &api,
            json!({"field": "traits.plan", "op": "eq", "value": hostile})
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &api,
            json!({"field": format!("traits.{hostile}"), "op": "exists", "value": true})
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &api,
            json!({"field": "email", "op": "contains", "value": "%' OR '1'='1"})
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &api,
            json!({"event": "purchase' OR 1=1 --", "op": "gte", "count": 1})
        )
        .await,
        0
    );
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("table intact");
    assert_eq!(customers, 11);

    // Unknown fields and operators are refused before any SQL is built, naming the path.
    for (rule, path) in [
        (
            json!({"all": [{"field": "customers.id; --", "op": "eq", "value": 1}]}),
            "rule.all[0].field",
        ),
        (
            json!({"any": [{"field": "email", "op": "= 1 OR", "value": "a"}]}),
            "rule.any[0].op",
        ),
    ] {
        let (status, body) = api
            .post(
                "/v1/profiling/segments",
                &json!({"name": "bad", "rule": rule}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], path);
    }
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.segments")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(saved, 0);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn rfm_in_profiles_matches_rfm_in_segments(pool: PgPool) {
    let api = Api::start(&pool).await;
    buyers(&api).await;
    for n in 1..=10 {
        let profile = api.profile(&format!("c{n}")).await;
        let rfm = &profile["rfm"];
        let segment = rfm["segment"].as_str().expect("a buyer has a segment");
        let rule = json!({"all": [
            {"field": "external_id", "op": "eq", "value": format!("c{n}")},
            {"field": "rfm.segment", "op": "eq", "value": segment},
            {"field": "rfm.r", "op": "eq", "value": rfm["r"]},
            {"field": "rfm.f", "op": "eq", "value": rfm["f"]},
            {"field": "rfm.m", "op": "eq", "value": rfm["m"]}
        ]});
        assert_eq!(count(&api, rule).await, 1, "c{n}: profile says {rfm}");
    }
    let best = api.profile("c10").await;
    assert_eq!(best["rfm"]["segment"], "champions");
    let worst = api.profile("c1").await;
    assert_eq!(
        (worst["rfm"]["r"].as_u64(), worst["rfm"]["f"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(worst["rfm"]["segment"], "lost");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn saved_segments_page_their_members_and_stay_per_tenant(pool: PgPool) {
    let api = Api::start(&pool).await;
    buyers(&api).await;
    let (status, seg) = api
        .post("/v1/profiling/segments", &json!({"name": "buyers", "rule": {"field": "profile.frequency", "op": "gte", "value": 1}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(seg["member_count"], 10);
    let id = seg["id"].as_str().expect("id");
    let (status, _) = api
        .post(
            "/v1/profiling/segments",
            &json!({"name": "buyers", "rule": {"field": "email", "op": "exists", "value": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/profiling/segments/{id}/members?limit=4&cursor={c}"),
            None => format!("/v1/profiling/segments/{id}/members?limit=4"),
        };
        let (_, page) = api.get(&path).await;
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["external_id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);

    let other = api.other_tenant_key(&pool).await;
    let theirs = api
        .server
        .client
        .get(api.server.url(&format!("/v1/profiling/segments/{id}")))
        .bearer_auth(other)
        .send()
        .await
        .expect("request");
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
}
