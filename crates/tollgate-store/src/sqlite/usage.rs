//! Usage totals, grouped in SQL by any of day, model, project and key.

use super::{SqliteStore, db_error};
use async_trait::async_trait;
use sqlx::Row;
use tollgate_core::credits::{UsageQuery, UsageTotals};
use tollgate_core::money::Micros;
use tollgate_core::ports::{StoreError, UsageStore};

const SECONDS_PER_DAY: i64 = 86_400;

#[async_trait]
impl UsageStore for SqliteStore {
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageTotals>, StoreError> {
        let g = query.group;
        // Only fixed column expressions are spliced in; every value is bound.
        let columns = [
            (g.day, "(created_at / 86400) * 86400", "day"),
            (g.model, "model", "model"),
            (g.project, "project_id", "project_id"),
            (g.key, "key_id", "key_id"),
        ];
        let select: Vec<String> = columns
            .iter()
            .map(|(on, expr, name)| {
                if *on {
                    format!("{expr} AS {name}")
                } else {
                    format!("NULL AS {name}")
                }
            })
            .collect();
        let grouped: Vec<&str> = columns.iter().filter(|c| c.0).map(|c| c.2).collect();
        let group_by = if grouped.is_empty() {
            String::new()
        } else {
            format!("GROUP BY {0} ORDER BY {0}", grouped.join(", "))
        };
        let sql = format!(
            "SELECT {}, count(*) AS requests, COALESCE(sum(prompt_tokens), 0) AS prompt_tokens, \
             COALESCE(sum(completion_tokens), 0) AS completion_tokens, COALESCE(sum(cost_micros), 0) AS cost \
             FROM usage_records WHERE tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2) \
             AND created_at >= ?3 AND created_at < ?4 {group_by}",
            select.join(", ")
        );
        let found = sqlx::query(&sql)
            .bind(&query.tenant_id)
            .bind(&query.project_id)
            .bind(query.since)
            .bind(query.until)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            let requests: i64 = row.try_get("requests").map_err(db_error)?;
            if requests == 0 {
                continue; // the ungrouped aggregate of an empty window
            }
            let day: Option<i64> = row.try_get("day").map_err(db_error)?;
            out.push(UsageTotals {
                day: day.map(|d| d - d.rem_euclid(SECONDS_PER_DAY)),
                model: row.try_get("model").map_err(db_error)?,
                project_id: row.try_get("project_id").map_err(db_error)?,
                key_id: row.try_get("key_id").map_err(db_error)?,
                requests: u64::try_from(requests).unwrap_or(0),
                prompt_tokens: u64::try_from(
                    row.try_get::<i64, _>("prompt_tokens").map_err(db_error)?,
                )
                .unwrap_or(0),
                completion_tokens: u64::try_from(
                    row.try_get::<i64, _>("completion_tokens")
                        .map_err(db_error)?,
                )
                .unwrap_or(0),
                cost: Micros(row.try_get("cost").map_err(db_error)?),
            });
        }
        Ok(out)
    }
}
