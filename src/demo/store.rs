//! The order book shared by the demo backends: plain data and validation rules with no I/O,
//! so the restaurant's rules are unit-tested without a server.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// Page size used when a listing does not ask for one.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page a listing returns, so one request cannot serialise the whole book.
pub const MAX_LIMIT: usize = 100;

/// Where an order is on its way from the kitchen to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Preparing,
    Ready,
    Delivered,
}

/// One order as stored and as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub customer: String,
    pub items: Vec<String>,
    pub status: OrderStatus,
    /// Unix time in seconds.
    pub created_at: u64,
}

/// What a customer asks for; becomes an [`Order`] once it passes validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewOrder {
    pub customer: String,
    pub items: Vec<String>,
}

/// Why a [`NewOrder`] was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidOrder {
    BlankCustomer,
    NoItems,
    BlankItem { index: usize },
}

impl fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BlankCustomer => f.write_str("customer must not be empty"),
            Self::NoItems => f.write_str("items must contain at least one item"),
            Self::BlankItem { index } => write!(f, "items[{index}] must not be empty"),
        }
    }
}

impl std::error::Error for InvalidOrder {}

/// One page of a listing plus the size of the whole book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub orders: Vec<Arc<Order>>,
    pub total: usize,
}

/// Thread-safe order book. Orders sit behind `Arc` so readers take a snapshot by bumping a
/// reference count and serialise it after the lock is released.
#[derive(Debug, Default)]
pub struct OrderStore {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    last_id: u64,
    /// Sorted by id because ids only grow and new orders are appended: lookups are a binary
    /// search and offset pagination is a slice.
    orders: Vec<Arc<Order>>,
}

impl Book {
    fn position(&self, id: u64) -> Option<usize> {
        self.orders.binary_search_by_key(&id, |order| order.id).ok()
    }
}

impl OrderStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `draft`, trimming surrounding whitespace from the customer and each item, and
    /// files it as a pending order. The caller supplies the clock so the store stays pure.
    pub fn create(&self, draft: NewOrder, created_at: u64) -> Result<Arc<Order>, InvalidOrder> {
        let NewOrder { customer, items } = draft.validated()?;
        let mut book = self.book();
        book.last_id += 1;
        let order = Arc::new(Order {
            id: book.last_id,
            customer,
            items,
            status: OrderStatus::Pending,
            created_at,
        });
        book.orders.push(Arc::clone(&order));
        Ok(order)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Order>> {
        let book = self.book();
        book.position(id)
            .map(|index| Arc::clone(&book.orders[index]))
    }

    /// Orders by ascending id, skipping `offset` and returning at most `limit` (capped at
    /// [`MAX_LIMIT`]).
    pub fn list(&self, limit: usize, offset: usize) -> OrderPage {
        let book = self.book();
        let total = book.orders.len();
        let start = offset.min(total);
        let end = start.saturating_add(limit.min(MAX_LIMIT)).min(total);
        OrderPage {
            orders: book.orders[start..end].to_vec(),
            total,
        }
    }

    /// Moves an order to `status`; `None` when no such order exists.
    pub fn set_status(&self, id: u64, status: OrderStatus) -> Option<Arc<Order>> {
        let mut book = self.book();
        let index = book.position(id)?;
        let order = &mut book.orders[index];
        // Copies only if a reader still holds the old snapshot; that reader keeps seeing it.
        Arc::make_mut(order).status = status;
        Some(Arc::clone(order))
    }

    /// Removes an order and hands it back; `None` when no such order exists.
    pub fn delete(&self, id: u64) -> Option<Arc<Order>> {
        let mut book = self.book();
        let index = book.position(id)?;
        Some(book.orders.remove(index))
    }

    pub fn len(&self) -> usize {
        self.book().orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every mutation leaves the book consistent before anything can panic, so a poisoned
        // lock holds valid data and the demo keeps serving.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NewOrder {
    fn validated(mut self) -> Result<Self, InvalidOrder> {
        if !trim_in_place(&mut self.customer) {
            return Err(InvalidOrder::BlankCustomer);
        }
        if self.items.is_empty() {
            return Err(InvalidOrder::NoItems);
        }
        for (index, item) in self.items.iter_mut().enumerate() {
            if !trim_in_place(item) {
                return Err(InvalidOrder::BlankItem { index });
            }
        }
        Ok(self)
    }
}

/// Trims without reallocating; returns whether anything is left.
fn trim_in_place(text: &mut String) -> bool {
    let kept = text.trim_end().len();
    text.truncate(kept);
    let leading = text.len() - text.trim_start().len();
    text.drain(..leading);
    !text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(customer: &str, items: &[&str]) -> NewOrder {
        NewOrder {
            customer: customer.to_owned(),
            items: items.iter().map(|item| (*item).to_owned()).collect(),
        }
    }

    fn store_with(count: usize) -> OrderStore {
        let store = OrderStore::new();
        for n in 0..count {
            store
                .create(draft(&format!("guest {n}"), &["falafel"]), 1_700_000_000)
                .expect("valid order");
        }
        store
    }

    #[test]
    fn new_orders_are_pending_with_increasing_ids_from_one() {
        let store = OrderStore::new();
        let first = store
            .create(draft("ada", &["falafel", "tea"]), 42)
            .expect("valid");
        let second = store.create(draft("grace", &["soup"]), 43).expect("valid");
        assert_eq!(first.id, 1);
        assert_eq!(second.id, 2);
        assert_eq!(first.status, OrderStatus::Pending);
        assert_eq!(first.created_at, 42);
        assert_eq!(first.items, ["falafel", "tea"]);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn customer_and_items_are_trimmed() {
        let store = OrderStore::new();
        let order = store
            .create(draft("  ada \n", &[" falafel\t"]), 0)
            .expect("valid");
        assert_eq!(order.customer, "ada");
        assert_eq!(order.items, ["falafel"]);
    }

    #[test]
    fn validation_names_the_offending_field() {
        let store = OrderStore::new();
        let cases = [
            (draft("", &["tea"]), InvalidOrder::BlankCustomer),
            (draft("   ", &["tea"]), InvalidOrder::BlankCustomer),
            (draft("ada", &[]), InvalidOrder::NoItems),
            (
                draft("ada", &["tea", " "]),
                InvalidOrder::BlankItem { index: 1 },
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(store.create(bad, 0), Err(expected));
        }
        assert!(store.is_empty(), "rejected drafts must not consume ids");
        assert_eq!(store.create(draft("ada", &["tea"]), 0).map(|o| o.id), Ok(1));
        assert_eq!(
            InvalidOrder::BlankItem { index: 3 }.to_string(),
            "items[3] must not be empty"
        );
    }

    #[test]
    fn list_pages_by_id_and_caps_the_limit() {
        let store = store_with(150);
        let page = store.list(2, 3);
        assert_eq!(page.total, 150);
        let ids: Vec<u64> = page.orders.iter().map(|order| order.id).collect();
        assert_eq!(ids, [4, 5]);

        assert_eq!(store.list(DEFAULT_LIMIT, 0).orders.len(), DEFAULT_LIMIT);
        assert_eq!(store.list(1_000, 0).orders.len(), MAX_LIMIT);
        assert_eq!(store.list(10, 145).orders.len(), 5);
        assert!(store.list(10, 150).orders.is_empty());
        assert!(store.list(usize::MAX, usize::MAX).orders.is_empty());
        assert!(store.list(0, 0).orders.is_empty());
    }

    #[test]
    fn status_changes_are_visible_and_leave_old_snapshots_alone() {
        let store = store_with(1);
        let before = store.get(1).expect("exists");
        let after = store.set_status(1, OrderStatus::Ready).expect("exists");
        assert_eq!(after.status, OrderStatus::Ready);
        assert_eq!(store.get(1).map(|o| o.status), Some(OrderStatus::Ready));
        assert_eq!(before.status, OrderStatus::Pending);
        assert_eq!(store.set_status(9, OrderStatus::Ready), None);
    }

    #[test]
    fn deleted_orders_are_gone_and_their_ids_are_not_reused() {
        let store = store_with(3);
        assert_eq!(store.delete(2).map(|o| o.id), Some(2));
        assert_eq!(store.delete(2), None);
        assert_eq!(store.get(2), None);
        assert_eq!(store.get(3).map(|o| o.id), Some(3));
        let ids: Vec<u64> = store.list(10, 0).orders.iter().map(|o| o.id).collect();
        assert_eq!(ids, [1, 3]);
        let next = store.create(draft("ada", &["tea"]), 0).expect("valid");
        assert_eq!(next.id, 4);
    }

    #[test]
    fn status_uses_lowercase_names_on_the_wire() {
        let order = Order {
            id: 7,
            customer: "ada".into(),
            items: vec!["tea".into()],
            status: OrderStatus::Preparing,
            created_at: 5,
        };
        let json = serde_json::to_value(&order).expect("serialisable");
        assert_eq!(json["status"], "preparing");
        let statuses: Vec<OrderStatus> =
            serde_json::from_str(r#"["pending","preparing","ready","delivered"]"#)
                .expect("all four parse");
        assert_eq!(statuses.len(), 4);
        assert!(serde_json::from_str::<OrderStatus>(r#""cooking""#).is_err());
    }

    #[test]
    fn concurrent_creates_get_distinct_ids() {
        let store = Arc::new(OrderStore::new());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        store.create(draft("ada", &["tea"]), 0).expect("valid");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker finished");
        }
        let page = store.list(MAX_LIMIT, 900);
        assert_eq!(page.total, 1_000);
        let ids: Vec<u64> = page.orders.iter().map(|o| o.id).collect();
        assert_eq!(ids, (901..=1_000).collect::<Vec<u64>>());
    }
}
