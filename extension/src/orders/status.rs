//! The order status machine, in one place. SQL asks it through
//! `order_status_can_move(from, to)`; `check_invariants()` replays every
//! order's history through it.
//!
//! ```text
//!            +-----------> cancelled <-----------+------------+
//!            |                                   |            |
//!   (new) -> pending --> payment_failed ---------+            |
//!            |  |             |                               |
//!            |  +--> expired -+---------+-------------------- +
//!            |                |         |
//!            +------------> paid <------+--> shipped --> delivered
//! ```
//! A failed or expired order can still be paid (stock is re-reserved if
//! available) or cancelled; a paid order can only move forward.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    PaymentFailed,
    Expired,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Paid,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
        Status::PaymentFailed,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::PaymentFailed => "payment_failed",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether stock is held for the order in this state.
    pub fn holds_stock(self) -> bool {
        self == Status::Pending
    }

    /// Whether the order has been paid (its stock is sold).
    pub fn is_paid(self) -> bool {
        matches!(self, Status::Paid | Status::Shipped | Status::Delivered)
    }

    /// No further move is possible.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Cancelled)
    }
}

/// Is `from -> to` a legal move? `from = None` is a new order.
pub fn can_move(from: Option<Status>, to: Status) -> bool {
    use Status::*;
    match from {
        None => to == Pending,
        Some(from) => matches!(
            (from, to),
            (Pending, Paid | Cancelled | PaymentFailed | Expired)
                | (PaymentFailed, Paid | Cancelled | Expired)
                | (Expired, Paid | Cancelled)
                | (Paid, Shipped)
                | (Shipped, Delivered)
        ),
    }
}

/// Check a whole history (oldest first); on failure, the index of the first
/// illegal step.
pub fn check_history(history: &[Status]) -> Result<(), usize> {
    let mut prev = None;
    for (i, &st) in history.iter().enumerate() {
        if !can_move(prev, st) {
            return Err(i);
        }
        prev = Some(st);
    }
    if history.is_empty() {
        Err(0)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn names_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("PAID"), None);
        assert_eq!(Status::parse(""), None);
    }

    #[test]
    fn orders_start_pending() {
        assert!(can_move(None, Pending));
        for st in Status::ALL.into_iter().filter(|s| *s != Pending) {
            assert!(!can_move(None, st), "{st:?}");
        }
    }

    #[test]
    fn final_states_have_no_exit() {
        for from in Status::ALL.into_iter().filter(|s| s.is_final()) {
            for to in Status::ALL {
                assert!(!can_move(Some(from), to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn no_self_loops_and_paid_only_moves_forward() {
        for st in Status::ALL {
            assert!(!can_move(Some(st), st));
        }
        assert!(!can_move(Some(Paid), Cancelled));
        assert!(!can_move(Some(Shipped), Cancelled));
        assert!(!can_move(Some(Pending), Shipped));
        assert!(can_move(Some(Expired), Paid));
        assert!(can_move(Some(PaymentFailed), Paid));
    }

    #[test]
    fn histories() {
        assert_eq!(check_history(&[Pending, Paid, Shipped, Delivered]), Ok(()));
        assert_eq!(check_history(&[Pending, PaymentFailed, Paid]), Ok(()));
        assert_eq!(check_history(&[Pending, Shipped]), Err(1));
        assert_eq!(check_history(&[Paid]), Err(0));
        assert_eq!(check_history(&[]), Err(0));
    }
}
