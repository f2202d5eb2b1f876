//! The AMQP `array` type: values sharing one constructor.

use crate::types::{TypeKind, Value};

/// An AMQP `array`: a sequence of values of one type, encoded with a single constructor
/// (0xe0, 0xf0). Distinct from a `list` on the wire, and some clients insist on one or the
/// other: Microsoft's Rust Event Hubs client rejects `partition_ids` sent as a list
/// (amqp-contract §3.3).
///
/// Valid by construction: every item has the element type, and the element type is not
/// [`TypeKind::Described`] (a described array carries its one descriptor in
/// [`descriptor`](Self::descriptor) and plain items).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    descriptor: Option<Box<Value>>,
    kind: TypeKind,
    items: Vec<Value>,
}

/// Why [`Array::new`] refused its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArrayError {
    /// An item's type differs from the element type.
    #[error("array item {index} is a {found:?}, not a {expected:?}")]
    MixedTypes {
        /// The position of the first offending item.
        index: usize,
        /// The element type.
        expected: TypeKind,
        /// The item's type.
        found: TypeKind,
    },
    /// The element type is `Described`: use [`Array::described`] instead.
    #[error("array items cannot carry their own descriptors")]
    DescribedItems,
}

impl Array {
    /// An array of `items`, all of type `kind`.
    pub fn new(kind: TypeKind, items: Vec<Value>) -> Result<Self, ArrayError> {
        Self::build(None, kind, items)
    }

    /// An array whose every item is described by `descriptor`.
    pub fn described(
        descriptor: Value,
        kind: TypeKind,
        items: Vec<Value>,
    ) -> Result<Self, ArrayError> {
        Self::build(Some(Box::new(descriptor)), kind, items)
    }

    /// An array of `string`s, e.g. Event Hubs `partition_ids` (amqp-contract §3.3).
    pub fn strings<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            descriptor: None,
            kind: TypeKind::String,
            items: items.into_iter().map(|s| Value::String(s.into())).collect(),
        }
    }

    /// An array of `symbol`s: how capabilities and SASL mechanisms are sent.
    pub fn symbols<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<crate::types::Symbol>,
    {
        Self {
            descriptor: None,
            kind: TypeKind::Symbol,
            items: items.into_iter().map(|s| Value::Symbol(s.into())).collect(),
        }
    }

    fn build(
        descriptor: Option<Box<Value>>,
        kind: TypeKind,
        items: Vec<Value>,
    ) -> Result<Self, ArrayError> {
        if kind == TypeKind::Described {
            return Err(ArrayError::DescribedItems);
        }
        if let Some((index, item)) = items.iter().enumerate().find(|(_, v)| v.kind() != kind) {
            return Err(ArrayError::MixedTypes {
                index,
                expected: kind,
                found: item.kind(),
            });
        }
        Ok(Self {
            descriptor,
            kind,
            items,
        })
    }

    /// The type every item has.
    pub fn kind(&self) -> TypeKind {
        self.kind
    }

    /// The descriptor shared by every item, for a described array.
    pub fn descriptor(&self) -> Option<&Value> {
        self.descriptor.as_deref()
    }

    /// The items, without the descriptor.
    pub fn items(&self) -> &[Value] {
        &self.items
    }

    /// The items, taken out.
    pub fn into_items(self) -> Vec<Value> {
        self.items
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// For the decoder, which checks the types itself.
    pub(crate) fn from_parts(
        descriptor: Option<Box<Value>>,
        kind: TypeKind,
        items: Vec<Value>,
    ) -> Self {
        Self {
            descriptor,
            kind,
            items,
        }
    }
}
