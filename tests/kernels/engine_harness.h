// Test harness for engine tests: random keys and queries in every wire
// format, and an Engine whose appends are mirrored into float64 oracles so
// that any Select row can be checked against SPEC 4.4.
//
//   EngineHarness h;                       // CPU engine
//   std::mt19937_64 rng(ref::TestSeed() + 5);
//   h.CreateRequest("r", config);
//   h.AppendKeys("r", 0, RandomKeys(rng, config.key_format, 1000, 128));
//   EncodedQuery q = RandomQuery(rng, KeyFormat::kBf16, 64, 128);
//   RowResult res = h.SelectOne(q.Row("r", 0, 999, SelectMode::kHisa, 64, 8));
//   EXPECT_TRUE(h.Check(q.Row(...), res, tol, "ctx"));
//
// Generators. RandomKeys draws Gaussian keys with a per-block offset (so
// blocks differ in J) and encodes them (fp8: per-token amax scale).
// IntegerKeys / IntegerQuery draw small integers with power-of-two scales:
// every score and block score of such inputs is exactly representable in
// fp32 for head_dim <= 128, num_heads <= 16 and block_size <= 64, so an
// fp32 engine must match the oracle exactly, ties included.
#ifndef HISA_TESTS_KERNELS_ENGINE_HARNESS_H_
#define HISA_TESTS_KERNELS_ENGINE_HARNESS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "tests/reference/checker.h"
#include "tests/reference/reference.h"
#include "tests/reference/wire_encoding.h"

namespace hisa::testing_support {

// One cell of the test shape matrix (D, H, B, m, k, layer length, pooling).
struct Shape {
  int head_dim;
  int num_heads;
  int block_size;
  int m;
  int k;
  int64_t length;
  BlockPooling pooling;
};
std::string ShapeName(const Shape& s);

// Query positions at the edges of `s`: the first token, t < k, t = k - 1,
// t = m*B - 1 (last row where HISA == DENSE), t = m*B, m*B + 1, the first
// token of the last block, the last two tokens (usually in a partial block),
// plus two random ones; sorted, unique, inside [0, length).
std::vector<int64_t> EdgePositions(const Shape& s, std::mt19937_64& rng);

// Random queries in `q_format` at EdgePositions(s), and a DENSE, a HISA
// and an AUTO row of each for request "r", layer 0 (return_scores drawn at
// random): the rows of the shape-matrix tests. The rows point into `*queries`, which receives the
// queries and must outlive them.
std::vector<QueryRow> EdgeRows(const Shape& s, KeyFormat q_format,
                               std::mt19937_64& rng,
                               std::vector<ref::EncodedQuery>* queries);

// Asserts two OK results are identical: positions and score bits (NaN
// padding equal to NaN). `what` names the comparison in failures.
void ExpectSameResult(const RowResult& a, const RowResult& b,
                      const std::string& what);

// Appends `keys` (a 256-token chunk template, positions rewritten) to layer 0
// of `id` again and again, at most `max_chunks` times, until an append
// fails; returns that failure (OK if every append succeeded) and sets
// *length to the layer length the successful appends reported.
absl::Status AppendUntilError(Engine& engine, absl::string_view id,
                              const ref::EncodedKeys& keys, int max_chunks,
                              int64_t* length);

// CPU engine options for tests (2 worker threads).
EngineOptions CpuTestOptions();

// `num_tokens` Gaussian keys (per-block offset of scale 0.5 for block size
// `offset_block`), encoded in `format`.
ref::EncodedKeys RandomKeys(std::mt19937_64& rng, KeyFormat format,
                            int64_t num_tokens, int head_dim,
                            int offset_block = 64);
// Gaussian query (num_heads x head_dim) and weights N(0, 1) (about half
// negative), encoded in `format`.
ref::EncodedQuery RandomQuery(std::mt19937_64& rng, KeyFormat format,
                              int num_heads, int head_dim);
// Keys with integer values in [-3, 3]; fp8 keys get per-token scales drawn
// from {0.5, 1, 2}.
ref::EncodedKeys IntegerKeys(std::mt19937_64& rng, KeyFormat format,
                             int64_t num_tokens, int head_dim);
// Query values in [-2, 2], weights in [-2, 2] (integers); fp8 scale 1.
ref::EncodedQuery IntegerQuery(std::mt19937_64& rng, KeyFormat format,
                               int num_heads, int head_dim);
// Concatenates encoded keys of the same format and head_dim.
ref::EncodedKeys Concat(const ref::EncodedKeys& a, const ref::EncodedKeys& b);

// A uniformly random integer in [lo, hi].
int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi);

class EngineHarness {
 public:
  explicit EngineHarness(EngineOptions options = CpuTestOptions());

  Engine& engine() { return *engine_; }

  // Creates the request in the engine (must succeed) and its oracles.
  void CreateRequest(const std::string& id, const RequestConfig& config);

  // Appends every token of `keys` after the layer's current length, in
  // chunks of random size in [1, max_chunk] (one chunk when max_chunk <= 0),
  // each append expected to succeed; the oracle gets the same keys.
  void AppendKeys(const std::string& id, int layer, const ref::EncodedKeys& keys,
                  std::mt19937_64* rng = nullptr, int64_t max_chunk = 0);

  // Every key appended so far to (id, layer), concatenated.
  const ref::EncodedKeys& keys(const std::string& id, int layer) const;
  const ref::LayerOracle& oracle(const std::string& id, int layer) const;
  const RequestConfig& config(const std::string& id) const;

  RowResult SelectOne(const QueryRow& row);

  // Checks `result` for `row` against the oracle of its (request, layer).
  ::testing::AssertionResult Check(const QueryRow& row, const RowResult& result,
                                   const ref::Tolerance& tol,
                                   absl::string_view context) const;

 private:
  struct Layer {
    ref::EncodedKeys keys;
    std::unique_ptr<ref::LayerOracle> oracle;
  };
  struct Request {
    RequestConfig config;
    std::vector<Layer> layers;
  };
  std::unique_ptr<Engine> engine_;
  std::map<std::string, Request> requests_;
};

// The checks of EdgeRows triple i (rows and results 3 i, 3 i + 1, 3 i + 2)
// of shape `s` from engine `h`: DENSE and HISA against the oracle under `tol`, the modes
// used, scores present exactly when asked, HISA equal to DENSE below m * B
// (SPEC 4.2) and AUTO equal to HISA. `where` names the cell in failures.
void ExpectEdgeRowTriple(const EngineHarness& h, const Shape& s,
                         const std::vector<QueryRow>& rows,
                         const std::vector<RowResult>& results, size_t i,
                         const ref::Tolerance& tol, const std::string& where);

// The exact-answer check shared by the CPU and GPU engine tests: integer
// inputs (IntegerKeys / IntegerQuery) over `trials` random cells of the
// shape matrix (D 64 / 128, H 1 / 8 / 16, B 16 / 64, m 1-6, every key and
// query format, mean and max pooling; seed ref::TestSeed() + 20), a DENSE
// and a HISA row at each of EdgePositions: every result must equal the
// oracle exactly, ties included. Each trial gets a fresh engine made with
// `options`. `one_batch`: a trial's rows go in one Engine::Select (a GPU
// batch), else one Select per row.
void ExpectIntegerInputsMatchTheOracle(const EngineOptions& options,
                                       int trials, bool one_batch);

}  // namespace hisa::testing_support

#endif  // HISA_TESTS_KERNELS_ENGINE_HARNESS_H_
