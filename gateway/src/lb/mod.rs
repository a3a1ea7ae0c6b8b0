//! Load-balancing building blocks: node choice per method, node health, and the narrowing
//! of candidates by health, priority and zone. Pure: no IO, no hyper or snapshot types, so
//! each rule is unit-tested alone.

pub mod chash;
