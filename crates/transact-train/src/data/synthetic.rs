//! The seeded synthetic world.
