//! Randomized tests of the codec.
