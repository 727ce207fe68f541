//! Recording events and keeping profiles current: the one path that single events, batches
//! and identify calls go through, and the rebuild that backfills profiles from events.

use std::collections::{HashMap, HashSet};

use mercato_platform::batch::{ItemResult, ItemStatus};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    db::{customers, events, profiles},
    domain::{
        customer::{self, CleanCustomer},
        event::CleanEvent,
        profile,
    },
};

/// Stores new events and adds them to their customers' profiles in one transaction.
/// Events whose `event_id` is already stored are reported as duplicates and change nothing.
pub async fn record_events(
    pool: &PgPool,
    tenant_id: Uuid,
    items: &[(usize, CleanEvent)],
) -> Result<Vec<ItemResult>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let results = record_events_in(&mut tx, tenant_id, items).await?;
    tx.commit().await?;
    if results.iter().any(|r| r.status == ItemStatus::Created) {
        schedule_incremental_scoring(pool, tenant_id).await?;
    }
    Ok(results)
}

/// New events change what the tenant's active sequence models predict: queue one scoring
/// pass (a few seconds later, so a burst of events is scored together) unless one waits.
pub async fn schedule_incremental_scoring(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<(), sqlx::Error> {
    use crate::jobs::SCORE_MODEL;
    use mercato_platform::jobs::queue::{self, NewJob};
    if crate::db::models::needs_incremental_scoring(pool, tenant_id, SCORE_MODEL).await? {
        let job = NewJob::new(
            tenant_id,
            SCORE_MODEL,
            serde_json::json!({"incremental": true}),
        )
        .delayed(INCREMENTAL_SCORING_DELAY_SECS);
        queue::enqueue(pool, &job).await?;
    }
    Ok(())
}

/// How long an incremental scoring pass waits for more events.
pub const INCREMENTAL_SCORING_DELAY_SECS: f64 = 2.0;

pub async fn record_events_in(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    items: &[(usize, CleanEvent)],
) -> Result<Vec<ItemResult>, sqlx::Error> {
    // Sorted so concurrent batches take row locks in the same order.
    let mut external: Vec<String> = items
        .iter()
        .filter_map(|(_, e)| e.customer_external_id.clone())
        .collect();
    external.sort();
    external.dedup();
    let customers = events::resolve_customers(conn, tenant_id, &external).await?;

    // Events naming both ids identify the anonymous visitor; linking first means anonymous
    // events earlier in the same batch already reach the customer.
    let mut links: Vec<(String, Uuid)> = items
        .iter()
        .filter_map(|(_, e)| {
            Some((
                e.anonymous_id.clone()?,
                customers.get(e.customer_external_id.as_ref()?).copied()?,
            ))
        })
        .collect();
    links.sort();
    links.dedup_by(|a, b| a.0 == b.0);
    let mut facts = events::link_identities(conn, tenant_id, &links).await?;

    let mut anonymous: Vec<String> = items
        .iter()
        .filter(|(_, e)| e.customer_external_id.is_none())
        .filter_map(|(_, e)| e.anonymous_id.clone())
        .collect();
    anonymous.sort();
    anonymous.dedup();
    let known = events::resolve_anonymous(conn, tenant_id, &anonymous).await?;

    let customer_of = |e: &CleanEvent| match &e.customer_external_id {
        Some(x) => customers.get(x).copied(),
        None => e.anonymous_id.as_ref().and_then(|a| known.get(a).copied()),
    };

    // A repeated event_id inside one batch is recorded once, like a retry.
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    let mut repeated = Vec::new();
    for (index, event) in items {
        if seen.insert(event.event_id.as_str()) {
            fresh.push((*index, event));
        } else {
            repeated.push(*index);
        }
    }
    // Every named customer was resolved above; an event left with no subject would be a bug.
    if fresh
        .iter()
        .any(|(_, e)| e.customer_external_id.is_some() && customer_of(e).is_none())
    {
        return Err(sqlx::Error::Protocol(
            "a customer id could not be resolved".into(),
        ));
    }
    let rows: Vec<events::NewEvent> = fresh
        .iter()
        .map(|(_, e)| events::NewEvent {
            event: e,
            customer_id: customer_of(e),
        })
        .collect();
    let inserted: HashSet<String> = events::insert(conn, tenant_id, &rows)
        .await?
        .into_iter()
        .collect();
    // The new events' facts come from memory; only their products' categories are read.
    let mut products: Vec<String> = rows
        .iter()
        .filter(|r| inserted.contains(&r.event.event_id))
        .flat_map(|r| r.event.product_ids.iter().cloned())
        .collect();
    products.sort();
    products.dedup();
    let categories = events::categories(conn, tenant_id, &products).await?;
    for row in rows.iter().filter(|r| inserted.contains(&r.event.event_id)) {
        let (Some(customer_id), e) = (row.customer_id, row.event) else {
            continue;
        };
        let mut own: Vec<&String> = e.product_ids.iter().collect();
        own.sort();
        own.dedup();
        facts.push(profile::EventFact {
            customer_id,
            kind: e.kind.clone(),
            occurred_at: e.occurred_at,
            // Stored with cents; the profile adds what was stored.
            revenue: e.revenue.map(|r| (r * 100.0).round() / 100.0),
            channel: e.channel.clone(),
            product_ids: e.product_ids.clone(),
            categories: own
                .into_iter()
                .filter_map(|p| categories.get(p).cloned())
                .collect(),
        });
    }
    profiles::apply(conn, tenant_id, &profile::deltas(&facts)).await?;

    let mut results: Vec<ItemResult> = fresh
        .iter()
        .map(|(index, e)| ItemResult {
            index: *index,
            status: if inserted.contains(&e.event_id) {
                ItemStatus::Created
            } else {
                ItemStatus::Duplicate
            },
            id: None,
            errors: Vec::new(),
        })
        .collect();
    results.extend(repeated.into_iter().map(|index| ItemResult {
        index,
        status: ItemStatus::Duplicate,
        id: None,
        errors: Vec::new(),
    }));
    Ok(results)
}

/// Rebuilds the profiles of these customers from their stored events.
pub async fn rebuild_profiles(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let facts = events::facts_for_customers(conn, tenant_id, customer_ids).await?;
    profiles::delete(conn, tenant_id, customer_ids).await?;
    profiles::apply(conn, tenant_id, &profile::deltas(&facts)).await
}

/// Links an anonymous id to a customer (created if new) and folds the visitor's past events
/// into the profile. Returns the customer and how many events joined it.
pub async fn identify(
    pool: &PgPool,
    tenant_id: Uuid,
    anonymous_id: &str,
    external_id: &str,
) -> Result<(Uuid, usize), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let customers =
        events::resolve_customers(&mut tx, tenant_id, &[external_id.to_owned()]).await?;
    let customer_id = customers
        .get(external_id)
        .copied()
        .ok_or_else(|| sqlx::Error::Protocol("customer resolution returned nothing".into()))?;
    let facts = events::link_identities(
        &mut tx,
        tenant_id,
        &[(anonymous_id.to_owned(), customer_id)],
    )
    .await?;
    profiles::apply(&mut tx, tenant_id, &profile::deltas(&facts)).await?;
    tx.commit().await?;
    Ok((customer_id, facts.len()))
}

/// Upserts cleaned customer records, deduplicated: an id merged into another customer lands
/// on the survivor, a new id whose email an existing customer has joins that customer (the
/// new id becomes an alias), and records repeating an id merge in order. Returns, per input
/// position, the stored row.
pub async fn upsert_customers(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    mut records: Vec<(usize, CleanCustomer)>,
) -> Result<Vec<(usize, customers::Upserted)>, sqlx::Error> {
    let ids: Vec<String> = records.iter().map(|(_, c)| c.external_id.clone()).collect();
    let emails: Vec<Option<String>> = records.iter().map(|(_, c)| c.email.clone()).collect();
    let canonical = customers::canonical_external_ids(conn, tenant_id, &ids, &emails).await?;
    let mut rename: HashMap<String, (String, Uuid)> = HashMap::new();
    for (incoming, target, id) in canonical {
        rename.entry(incoming).or_insert((target, id));
    }
    for (_, record) in &mut records {
        if let Some((target, id)) = rename.get(&record.external_id) {
            customers::add_alias(conn, tenant_id, &record.external_id, *id).await?;
            record.external_id = target.clone();
        }
    }
    let positions: Vec<usize> = records.iter().map(|(i, _)| *i).collect();
    let (unique, slot_of) = customer::dedupe(records);
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    let stored = customers::upsert_many(&mut *conn, tenant_id, &unique).await?;
    let by_external: HashMap<&str, &customers::Upserted> =
        stored.iter().map(|s| (s.external_id.as_str(), s)).collect();
    Ok(positions
        .into_iter()
        .filter_map(|index| {
            let record = unique.get(*slot_of.get(&index)?)?;
            let row = by_external.get(record.external_id.as_str())?;
            Some((
                index,
                customers::Upserted {
                    id: row.id,
                    external_id: row.external_id.clone(),
                    inserted: row.inserted,
                },
            ))
        })
        .collect())
}
