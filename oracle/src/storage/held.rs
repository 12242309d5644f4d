//! Windows held after a gap in a node's chain (table `held_windows`, migration
//! `m20261123_000010`): stored when they arrive ahead of the node's next expected `seq`, never
//! credited there, and appended in order once the gap is filled.

use super::{Storage, StorageError, seq_i64};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, OnConflict, Query};
use sea_orm::{ConnectionTrait, QueryResult};

/// Most windows held for one node: beyond it a window after a gap is refused (`seq_gap`), so a
/// node cannot fill the database with windows that can never be credited.
pub const MAX_HELD_PER_NODE: u64 = 1024;

/// What holding a window did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Stored now.
    Stored,
    /// A window was already held at this seq: its compact JWS (the caller compares).
    Existing(String),
}

fn table() -> Alias {
    Alias::new("held_windows")
}

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

impl Storage {
    /// Holds `jws` (hash `hash`) as window `seq` of `node_id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn hold_window(
        &self,
        node_id: &str,
        seq: u64,
        hash: &str,
        jws: &str,
        now: DateTime<Utc>,
    ) -> Result<Held, StorageError> {
        let insert = Query::insert()
            .into_table(table())
            .columns(["node_id", "seq", "hash", "jws", "received_at"].map(Alias::new))
            .values_panic([
                node_id.into(),
                seq_i64(seq).into(),
                hash.into(),
                jws.into(),
                now.into(),
            ])
            .on_conflict(
                OnConflict::columns([Alias::new("node_id"), Alias::new("seq")])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let backend = self.db.get_database_backend();
        let result = self.db.execute_raw(backend.build(&insert)).await?;
        if result.rows_affected() == 1 {
            return Ok(Held::Stored);
        }
        match self.held_window(node_id, seq).await? {
            Some(existing) => Ok(Held::Existing(existing)),
            // Released between our insert and this read: it is in the chain now.
            None => Ok(Held::Stored),
        }
    }

    /// The compact JWS held as window `seq` of `node_id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn held_window(
        &self,
        node_id: &str,
        seq: u64,
    ) -> Result<Option<String>, StorageError> {
        let select = Query::select()
            .from(table())
            .column(Alias::new("jws"))
            .and_where(col("node_id").eq(node_id))
            .and_where(col("seq").eq(seq_i64(seq)))
            .to_owned();
        let backend = self.db.get_database_backend();
        let row: Option<QueryResult> = self.db.query_one_raw(backend.build(&select)).await?;
        Ok(match row {
            Some(r) => Some(r.try_get_by_index(0)?),
            None => None,
        })
    }

    /// Whether any window is held for `node_id` (one index probe: the ingest hot path asks it
    /// after every accepted window).
    ///
    /// # Errors
    /// Database failure.
    pub async fn has_held(&self, node_id: &str) -> Result<bool, StorageError> {
        let select = Query::select()
            .from(table())
            .expr(Expr::val(1))
            .and_where(col("node_id").eq(node_id))
            .limit(1)
            .to_owned();
        let backend = self.db.get_database_backend();
        Ok(self
            .db
            .query_one_raw(backend.build(&select))
            .await?
            .is_some())
    }

    /// Which of `node_ids` have held windows, in one query, through `conn` (the ingest batch's
    /// transaction).
    ///
    /// # Errors
    /// Database failure.
    pub async fn nodes_with_held(
        &self,
        conn: &impl ConnectionTrait,
        node_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StorageError> {
        if node_ids.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        // Rounded up to a power of two by repeating the last id: a few statement shapes, each
        // prepared once per connection, instead of one per batch size.
        let shape = node_ids.len().next_power_of_two();
        let padding = node_ids
            .last()
            .into_iter()
            .cycle()
            .take(shape - node_ids.len());
        let select = Query::select()
            .distinct()
            .from(table())
            .column(Alias::new("node_id"))
            .and_where(col("node_id").is_in(node_ids.iter().chain(padding).copied()))
            .to_owned();
        let backend = conn.get_database_backend();
        conn.query_all_raw(backend.build(&select))
            .await?
            .iter()
            .map(|row| {
                row.try_get::<String>("", "node_id")
                    .map_err(StorageError::from)
            })
            .collect()
    }

    /// Windows held for `node_id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn held_count(&self, node_id: &str) -> Result<u64, StorageError> {
        let select = Query::select()
            .from(table())
            .expr(Expr::cust("CAST(COUNT(*) AS BIGINT)"))
            .and_where(col("node_id").eq(node_id))
            .to_owned();
        let backend = self.db.get_database_backend();
        let n: i64 = match self.db.query_one_raw(backend.build(&select)).await? {
            Some(r) => r.try_get_by_index(0)?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Removes the window held as `seq` of `node_id` (appended, or refused when released).
    ///
    /// # Errors
    /// Database failure.
    pub async fn release_held(&self, node_id: &str, seq: u64) -> Result<(), StorageError> {
        let delete = Query::delete()
            .from_table(table())
            .and_where(col("node_id").eq(node_id))
            .and_where(col("seq").eq(seq_i64(seq)))
            .to_owned();
        let backend = self.db.get_database_backend();
        self.db.execute_raw(backend.build(&delete)).await?;
        Ok(())
    }

    /// The windows held for `node_id` at or below `seq` (the chain head has passed them), as
    /// `(seq, compact JWS)` in seq order.
    ///
    /// # Errors
    /// Database failure.
    pub async fn held_through(
        &self,
        node_id: &str,
        seq: u64,
    ) -> Result<Vec<(u64, String)>, StorageError> {
        let select = Query::select()
            .from(table())
            .columns([Alias::new("seq"), Alias::new("jws")])
            .and_where(col("node_id").eq(node_id))
            .and_where(col("seq").lte(seq_i64(seq)))
            .order_by(Alias::new("seq"), sea_orm::Order::Asc)
            .to_owned();
        let backend = self.db.get_database_backend();
        self.db
            .query_all_raw(backend.build(&select))
            .await?
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get("", "seq")?;
                Ok((u64::try_from(seq).unwrap_or(0), row.try_get("", "jws")?))
            })
            .collect()
    }

    /// Removes the windows held for `node_id` at or below `seq` (the chain head has passed them).
    ///
    /// # Errors
    /// Database failure.
    pub async fn drop_held_through(&self, node_id: &str, seq: u64) -> Result<(), StorageError> {
        let delete = Query::delete()
            .from_table(table())
            .and_where(col("node_id").eq(node_id))
            .and_where(col("seq").lte(seq_i64(seq)))
            .to_owned();
        let backend = self.db.get_database_backend();
        self.db.execute_raw(backend.build(&delete)).await?;
        Ok(())
    }

    /// The nodes with a held window at or below their chain head's next seq (the gap filled,
    /// or a row left by a release cut short), in one query: the ones a release would change.
    ///
    /// # Errors
    /// Database failure.
    pub async fn releasable_held_nodes(&self) -> Result<Vec<String>, StorageError> {
        let backend = self.db.get_database_backend();
        let select = sea_orm::Statement::from_string(
            backend,
            "SELECT h.node_id FROM held_windows h JOIN nodes n ON n.id = h.node_id \
             GROUP BY h.node_id, n.last_seq HAVING MIN(h.seq) <= n.last_seq + 1",
        );
        self.db
            .query_all_raw(select)
            .await?
            .iter()
            .map(|row| row.try_get_by_index(0).map_err(StorageError::from))
            .collect()
    }

    /// Windows held per node (nodes with none are absent).
    ///
    /// # Errors
    /// Database failure.
    pub async fn held_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, u64>, StorageError> {
        let select = Query::select()
            .from(table())
            .column(Alias::new("node_id"))
            .expr(Expr::cust("CAST(COUNT(*) AS BIGINT)"))
            .group_by_col(Alias::new("node_id"))
            .to_owned();
        let backend = self.db.get_database_backend();
        let mut counts = std::collections::HashMap::new();
        for row in self.db.query_all_raw(backend.build(&select)).await? {
            let node: String = row.try_get_by_index(0)?;
            let n: i64 = row.try_get_by_index(1)?;
            counts.insert(node, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}

#[cfg(test)]
impl Storage {
    /// Calls `observe` with every statement run through this handle (not its clones made
    /// before), its values written in: tests count the queries a request costs.
    pub(crate) fn observe_statements(&mut self, observe: impl Fn(&str) + Send + Sync + 'static) {
        self.db
            .set_metric_callback(move |info| observe(&info.statement.to_string()));
    }
}
