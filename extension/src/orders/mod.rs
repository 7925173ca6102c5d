//! Orders: the status machine (pure) and its SQL face.

pub mod status;

use pgrx::prelude::*;
use status::{can_move, Status};

/// Whether an order may move from status `from` (NULL for a new order) to
/// `to`. Unknown status names are never legal.
#[pg_extern(immutable, parallel_safe)]
fn order_status_can_move(from: Option<&str>, to: Option<&str>) -> Option<bool> {
    let to = match Status::parse(to?) {
        Some(t) => t,
        None => return Some(false),
    };
    Some(match from {
        None => can_move(None, to),
        Some(f) => Status::parse(f).is_some_and(|f| can_move(Some(f), to)),
    })
}
