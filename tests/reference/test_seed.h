// The random seed of a test binary: fresh each run, printed, and overridable
// with the environment variable HISA_TEST_SEED to replay a failure.
//
//   std::mt19937_64 rng(hisa::ref::TestSeed() + 17);   // 17: per-test salt
//   SCOPED_TRACE(hisa::ref::SeedNote());
//
// TestSeed() returns the same value for the whole process; the first call
// prints "HISA_TEST_SEED=<n>" to stderr. Thread-safe.
#ifndef HISA_TESTS_REFERENCE_TEST_SEED_H_
#define HISA_TESTS_REFERENCE_TEST_SEED_H_

#include <cstdint>
#include <string>

namespace hisa::ref {

uint64_t TestSeed();
// "HISA_TEST_SEED=<n>" for failure messages.
std::string SeedNote();

}  // namespace hisa::ref

#endif  // HISA_TESTS_REFERENCE_TEST_SEED_H_
