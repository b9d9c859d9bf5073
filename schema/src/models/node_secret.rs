//! `node_secrets`: secrets every connector of this database shares (made by the migrations).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::DbError;
use crate::schema::node_secrets;

/// The name of the secret STREAM receivers derive their shared secrets from.
pub const STREAM: &str = "stream";

/// The 32-byte secret `name`.
pub async fn node_secret(conn: &mut AsyncPgConnection, name: &str) -> Result<[u8; 32], DbError> {
    let secret: Vec<u8> = node_secrets::table
        .filter(node_secrets::name.eq(name))
        .select(node_secrets::secret)
        .first(conn)
        .await?;
    <[u8; 32]>::try_from(secret.as_slice())
        .map_err(|_| DbError::Refused(format!("node secret {name:?} is not 32 bytes")))
}
