// Package suggest finds the word a typo was meant to be, for the "did you
// mean" hints of configuration errors. It imports nothing of Herald, so
// both the core (channel rule principals) and the configuration loader
// (unknown keys) use it.
package suggest
