//! The cost rollups: what each deployment cost, one record per deployment-hour, in the store's `cost` tree.
//!
//! The engine prices every tick ([`crate::domain::cost::snapshot_report`]) and rolls the ticks of an hour into one
//! [`DeploymentCost`] ([`DeploymentCost::merge_later`]); [`crate::cost::CostBook`] writes it here when the hour
//! turns, and again every few minutes while it is open, replacing the record of the same hour. A record is the
//! deployment cost as JSON (it is small and written once an hour or so), in the store's versioned byte
//! envelope. Records are kept as long as the five-minute rollups ([`Retention::rollups`](super::Retention)).
//! A record that does not decode is skipped when read: the rollups are a report, never an input of a decision.

use super::codec;
use super::{Kind, Store, StoreError};
use crate::domain::cost::DeploymentCost;
use crate::domain::model::UnixMillis;

impl Store {
    /// Stores the cost of `cost.key` over the hour starting at `hour`, replacing what was stored for that hour.
    pub async fn put_cost_hour(
        &self,
        hour: UnixMillis,
        cost: &DeploymentCost,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(cost).map_err(|e| StoreError::Corrupt {
            path: self.path().to_path_buf(),
            tree: Kind::Cost.name(),
            detail: e.to_string(),
        })?;
        self.put(Kind::Cost, &cost.key, hour, codec::encode_bytes(&json))
            .await
    }

    /// The hourly costs of one deployment with the hour's start in `[from, to)`, oldest first; records that do
    /// not decode are left out.
    pub async fn cost_hours(
        &self,
        key: &crate::domain::model::DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, DeploymentCost)>, StoreError> {
        let key = key.clone();
        let raw = self
            .blocking(move |inner| {
                inner.scan(Kind::Cost, &key, from, to, |v| {
                    codec::decode_bytes(v).map(<[u8]>::to_vec)
                })
            })
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(at, bytes)| {
                serde_json::from_slice::<DeploymentCost>(&bytes)
                    .ok()
                    .map(|c| (at, c))
            })
            .collect())
    }
}
