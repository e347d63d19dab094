//! Scenario tests: see below.
