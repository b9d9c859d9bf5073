//! The TEXT columns that hold one of a fixed set of words, as Rust enums.
//!
//! Each enum maps to its column with diesel (`AsExpression` / `FromSqlRow` on `Text`), so
//! queries compare and load typed values; the migrations' `CHECK (.. IN (..))` constraints
//! hold the same sets (a test in `schema/tests` checks each enum against its CHECK). A word outside the set never turns into a default: loading it fails
//! with [`UnknownWord`].

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// A word that is not one of a column's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {}, not {word:?}", one_of(expected))]
pub struct UnknownWord {
    /// What it was meant to be (`relation`, `kind`, `state`).
    pub what: &'static str,
    /// The allowed words.
    pub expected: &'static [&'static str],
    /// What was given.
    pub word: String,
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Declares an enum stored as one of a fixed set of TEXT words, with `as_str`, `FromStr`,
/// `Display` and its diesel mapping.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal in $column:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            #[doc = concat!("The word stored in `", $column, "`.")]
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(word: &str) -> Result<$name, UnknownWord> {
                match word {
                    $( $word => Ok($name::$variant), )+
                    other => Err(UnknownWord {
                        what: $what,
                        expected: &[$($word),+],
                        word: other.to_owned(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                let word = std::str::from_utf8(value.as_bytes())?;
                Ok(word.parse()?)
            }
        }
    };
}

text_enum! {
    /// How an account relates to us, which decides its ILP address and ILDCP.
    Relation, "relation" in "accounts.relation" {
        /// We are its child: it gives us our address.
        Parent = "parent",
        /// A peer at our level.
        Peer = "peer",
        /// Our child: its address is under ours.
        Child = "child",
    }
}

text_enum! {
    /// Which adaptor settles through a ledger.
    LedgerKind, "kind" in "ledgers.kind" {
        /// An external RFC 38 settlement engine over HTTP.
        Rfc38 = "rfc38",
        /// Our native signed cumulative claims, sent as `peer.settle` messages.
        Claims = "claims",
    }
}

text_enum! {
    /// Where an outgoing settlement stands.
    SettlementState, "state" in "settlements.state" {
        /// The balance was lowered; the ledger has not definitely answered yet.
        Pending = "pending",
        /// The ledger paid.
        Confirmed = "confirmed",
        /// The ledger definitely did not pay; the amount was given back.
        Failed = "failed",
    }
}

text_enum! {
    /// Where a claim a peer sent us stands.
    ClaimState, "state" in "settlement_claims.state" {
        /// Written by the connector, not yet verified by the worker.
        Received = "received",
        /// Verified and credited to the peer's balance.
        Credited = "credited",
        /// Refused (bad signature, not above the last credited amount, ...).
        Rejected = "rejected",
    }
}

text_enum! {
    /// Why a balance moved, one per `balance_journal` row.
    JournalKind, "kind" in "balance_journal.kind" {
        /// Fulfilled packets, netted per account per batch.
        Packets = "packets",
        /// We paid the account through its ledger.
        SettlementSent = "settlement_sent",
        /// A payment that definitely failed, given back.
        SettlementRefunded = "settlement_refunded",
        /// The account paid us (a credited claim or an RFC 38 engine's notice).
        SettlementReceived = "settlement_received",
        /// An operator's correction.
        Adjustment = "adjustment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_an_unknown_word_is_refused() {
        // Proves as_str and FromStr agree for every variant, and nothing falls back to a default.
        for relation in [Relation::Parent, Relation::Peer, Relation::Child] {
            assert_eq!(relation.as_str().parse::<Relation>(), Ok(relation));
        }
        for state in [
            SettlementState::Pending,
            SettlementState::Confirmed,
            SettlementState::Failed,
        ] {
            assert_eq!(state.as_str().parse::<SettlementState>(), Ok(state));
        }
        let err = "Peer".parse::<Relation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "relation must be parent, peer or child, not \"Peer\""
        );
        assert!("".parse::<LedgerKind>().is_err());
        assert!("settled".parse::<ClaimState>().is_err());
    }
}
