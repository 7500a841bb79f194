// Round trips of the compact wire form of selected positions
// (proto/compact_positions.h, SPEC 4.3) as the client decodes it: random
// sorted position sets (HISA-like clustered, sparse, empty, padded), both
// encodings, hand-built messages checked against the format documented in
// hisa.proto (with an independent encoder written here), malformed input
// rejected with INVALID_ARGUMENT, and the size claim: on HISA-like selections
// (k = 2048 positions inside 64 blocks of 128) the compact form is at most a
// third of raw int32 bytes.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "proto/compact_positions.h"
#include "proto/hisa.pb.h"
#include "tests/reference/test_seed.h"

namespace hisa {
namespace {

constexpr int kK = 2048;

// --- An independent encoder, written from the comments in hisa.proto. ---

void PutVarint(uint64_t v, std::string* out) {
  do {
    uint8_t byte = v & 0x7F;
    v >>= 7;
    if (v != 0) byte |= 0x80;
    out->push_back(static_cast<char>(byte));
  } while (v != 0);
}

std::string RefDelta(const std::vector<int32_t>& pos) {
  std::string out;
  for (size_t i = 0; i < pos.size(); ++i) {
    const int64_t gap = i == 0 ? pos[0] : int64_t{pos[i]} - pos[i - 1] - 1;
    PutVarint(static_cast<uint64_t>(gap), &out);
  }
  return out;
}

std::string RefBitmask(const std::vector<int32_t>& pos, int block_size) {
  std::string out;
  int64_t prev_block = -1;
  size_t i = 0;
  while (i < pos.size()) {
    const int64_t block = pos[i] / block_size;
    // Like delta_varint: the first block id, then each gap minus one (what
    // the codec does; hisa.proto's comment says "block-id delta").
    PutVarint(static_cast<uint64_t>(block - prev_block - 1), &out);
    std::string mask(static_cast<size_t>((block_size + 7) / 8), '\0');
    while (i < pos.size() && pos[i] / block_size == block) {
      const int in_block = pos[i] % block_size;
      mask[in_block / 8] = static_cast<char>(mask[in_block / 8] | (1 << (in_block % 8)));
      ++i;
    }
    out += mask;
    prev_block = block;
  }
  return out;
}

// --- Position sets. ---

// HISA-like: `blocks` distinct blocks of `block_size` among the first
// `num_blocks` (always block 0 and the last: sink and local context), and k
// positions drawn from them, ascending.
std::vector<int32_t> HisaLike(std::mt19937_64& rng, int num_blocks, int blocks,
                              int block_size, int k) {
  std::vector<int> chosen = {0, num_blocks - 1};
  std::vector<int> others;
  for (int b = 1; b < num_blocks - 1; ++b) others.push_back(b);
  std::shuffle(others.begin(), others.end(), rng);
  for (int i = 0; i < blocks - 2 && i < static_cast<int>(others.size()); ++i) {
    chosen.push_back(others[i]);
  }
  std::vector<int32_t> candidates;
  for (int b : chosen) {
    for (int j = 0; j < block_size; ++j) candidates.push_back(b * block_size + j);
  }
  std::shuffle(candidates.begin(), candidates.end(), rng);
  candidates.resize(std::min<size_t>(candidates.size(), static_cast<size_t>(k)));
  std::sort(candidates.begin(), candidates.end());
  return candidates;
}

// min(count, range) distinct positions uniformly in [0, range), ascending.
std::vector<int32_t> Sparse(std::mt19937_64& rng, int64_t range, int count) {
  count = static_cast<int>(std::min<int64_t>(count, range));
  std::uniform_int_distribution<int64_t> dist(0, range - 1);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < count) {
    const size_t missing = static_cast<size_t>(count) - out.size();
    for (size_t i = 0; i < missing; ++i) {
      out.push_back(static_cast<int32_t>(dist(rng)));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return out;
}

std::vector<int32_t> Padded(std::vector<int32_t> pos, int k) {
  pos.resize(static_cast<size_t>(k), -1);
  return pos;
}

// Encodes, checks the encoder picked the smaller documented encoding and
// wrote it byte for byte, decodes, and checks the SPEC 4.3 contract.
void RoundTrip(const std::vector<int32_t>& pos, int block_size, int k,
               v1::CompactPositions* wire_out = nullptr) {
  SCOPED_TRACE(ref::SeedNote());
  const std::vector<int32_t> engine_output = Padded(pos, k);
  v1::CompactPositions wire;
  EncodePositions(engine_output, block_size, &wire);
  EXPECT_EQ(wire.count(), pos.size());
  const std::string delta = RefDelta(pos);
  const std::string bitmask = RefBitmask(pos, block_size);
  if (wire.has_block_bitmask()) {
    EXPECT_EQ(wire.block_size(), static_cast<uint32_t>(block_size));
    EXPECT_EQ(wire.block_bitmask(), bitmask);
    EXPECT_LE(bitmask.size(), delta.size());
  } else {
    EXPECT_EQ(wire.delta_varint(), delta);
    EXPECT_LE(delta.size(), bitmask.size());
  }
  absl::StatusOr<std::vector<int32_t>> decoded = DecodePositions(wire, k);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), static_cast<size_t>(k));
  EXPECT_EQ(*decoded, engine_output);
  // The contract, checked directly: ascending, then only -1.
  size_t n = 0;
  while (n < decoded->size() && (*decoded)[n] >= 0) ++n;
  EXPECT_EQ(n, pos.size());
  EXPECT_TRUE(std::is_sorted(decoded->begin(), decoded->begin() + n));
  EXPECT_EQ(std::adjacent_find(decoded->begin(), decoded->begin() + n),
            decoded->begin() + n);
  for (size_t i = n; i < decoded->size(); ++i) EXPECT_EQ((*decoded)[i], -1);
  if (wire_out != nullptr) *wire_out = wire;
}

absl::StatusCode DecodeCode(const v1::CompactPositions& wire, int k) {
  return DecodePositions(wire, k).status().code();
}

TEST(ClientCompactPositionsTest, HisaLikeSelectionsRoundTripAndAreSmall) {
  std::mt19937_64 rng(ref::TestSeed() + 1);
  int64_t compact_bytes = 0;
  int64_t raw_bytes = 0;
  int bitmask_chosen = 0;
  constexpr int kTrials = 50;
  for (int trial = 0; trial < kTrials; ++trial) {
    // Contexts of 16K..128K tokens: 128..1024 blocks, 64 chosen.
    const int num_blocks = 128 << (trial % 4);
    const std::vector<int32_t> pos = HisaLike(rng, num_blocks, 64, 128, kK);
    ASSERT_EQ(pos.size(), static_cast<size_t>(kK));
    v1::CompactPositions wire;
    RoundTrip(pos, 128, kK, &wire);
    if (wire.has_block_bitmask()) ++bitmask_chosen;
    compact_bytes += static_cast<int64_t>(wire.ByteSizeLong());
    raw_bytes += int64_t{kK} * 4;
    // Per selection, not only on average.
    EXPECT_LE(3 * static_cast<int64_t>(wire.ByteSizeLong()), int64_t{kK} * 4)
        << "trial " << trial << ": " << wire.ByteSizeLong() << " B";
  }
  const double ratio = static_cast<double>(compact_bytes) / raw_bytes;
  std::printf("HISA-like (k=2048 in 64 blocks of 128): compact %.1f B vs raw "
              "%d B per row, ratio %.4f; block_bitmask chosen %d/%d\n",
              static_cast<double>(compact_bytes) / kTrials, kK * 4, ratio,
              bitmask_chosen, kTrials);
  EXPECT_LE(ratio, 1.0 / 3.0);
  // 2048 of 8192 positions per block set: one bit per candidate beats a
  // byte per position, so the bitmask must be chosen.
  EXPECT_EQ(bitmask_chosen, kTrials);
}

TEST(ClientCompactPositionsTest, SparseSelectionsUseDeltaVarint) {
  std::mt19937_64 rng(ref::TestSeed() + 2);
  for (int trial = 0; trial < 30; ++trial) {
    // Spread over up to 2^31 positions: gaps need multi-byte varints, and
    // every position sits in its own block.
    const int64_t range = trial % 2 == 0 ? (int64_t{1} << 31) : 1 << 20;
    const int count = 1 + static_cast<int>(rng() % kK);
    const std::vector<int32_t> pos = Sparse(rng, range, count);
    v1::CompactPositions wire;
    RoundTrip(pos, 128, kK, &wire);
    EXPECT_TRUE(wire.has_delta_varint()) << "trial " << trial;
  }
}

TEST(ClientCompactPositionsTest, DenseRunsUseBlockBitmask) {
  std::mt19937_64 rng(ref::TestSeed() + 3);
  for (int block_size : {8, 16, 128, 1024}) {
    // Every position of a few whole blocks.
    const int first_block = static_cast<int>(rng() % 1000);
    std::vector<int32_t> pos;
    for (int j = 0; j < std::min(kK, 4 * block_size); ++j) {
      pos.push_back(first_block * block_size + j);
    }
    v1::CompactPositions wire;
    RoundTrip(pos, block_size, kK, &wire);
    EXPECT_TRUE(wire.has_block_bitmask()) << "block_size " << block_size;
  }
}

TEST(ClientCompactPositionsTest, EmptyAndPaddingAndEdges) {
  // Nothing eligible: count 0, all padding.
  RoundTrip({}, 128, kK);
  RoundTrip({}, 128, 1);
  // t + 1 < k: positions 0..t then -1.
  for (int t : {0, 1, 127, 128, 1000, 2046}) {
    std::vector<int32_t> pos;
    for (int s = 0; s <= t; ++s) pos.push_back(s);
    RoundTrip(pos, 128, kK);
  }
  // Exactly k, no padding; k = 1.
  RoundTrip({5}, 128, 1);
  std::vector<int32_t> full;
  for (int s = 0; s < kK; ++s) full.push_back(3 * s);
  RoundTrip(full, 128, kK);
  // The largest position the wire allows, and position 0 with it.
  RoundTrip({0, 2147483646, 2147483647}, 128, 4);
  RoundTrip({2147483647}, 1024, kK);
}

TEST(ClientCompactPositionsTest, RandomMixedSetsRoundTrip) {
  std::mt19937_64 rng(ref::TestSeed() + 4);
  for (int trial = 0; trial < 200; ++trial) {
    const int block_size = 16 << (rng() % 7);  // 16..1024
    const int k = 1 + static_cast<int>(rng() % kK);
    std::vector<int32_t> pos;
    if (rng() % 2 == 0) {
      const int num_blocks = 2 + static_cast<int>(rng() % 200);
      const int blocks = 2 + static_cast<int>(rng() % num_blocks);
      pos = HisaLike(rng, num_blocks, std::min(blocks, num_blocks), block_size,
                     static_cast<int>(rng() % (k + 1)));
    } else {
      pos = Sparse(rng, 1 + static_cast<int64_t>(rng() % (int64_t{1} << 31)),
                   static_cast<int>(rng() % (k + 1)));
    }
    ASSERT_LE(pos.size(), static_cast<size_t>(k));
    RoundTrip(pos, block_size, k);
  }
}

// The formats as documented in hisa.proto, built by hand.
// The decoder's fast word expansion (AVX-512 where available) writes
// exactly the scalar reference's positions, on sparse, dense and random
// words; and where the CPU has AVX-512 the fast form is the vector one (a
// vector form failing its first-use check would silently fall back to
// scalar, and every round trip above would still pass).
TEST(ClientCompactPositionsTest, FastWordExpansionMatchesScalar) {
  std::mt19937_64 rng(ref::TestSeed() + 5);
  std::vector<uint64_t> words = {0, ~uint64_t{0}, 1, uint64_t{1} << 63,
                                 0x00000000FFFF0000ull, 0x8001800180018001ull};
  for (int i = 0; i < 2000; ++i) {
    uint64_t w = rng();
    // Sparser and denser words too.
    if (i % 3 == 1) w &= rng();
    if (i % 3 == 2) w |= rng();
    words.push_back(w);
  }
  int32_t fast[64], scalar[64];
  for (uint64_t w : words) {
    const int64_t first = static_cast<int64_t>(rng() % (int64_t{1} << 30));
    const size_t nf = compact_internal::ExpandWordFast(w, first, fast);
    const size_t ns = compact_internal::ExpandWordScalar(w, first, scalar);
    ASSERT_EQ(nf, ns) << std::hex << w;
    ASSERT_EQ(ns, static_cast<size_t>(__builtin_popcountll(w)));
    for (size_t j = 0; j < ns; ++j) {
      ASSERT_EQ(fast[j], scalar[j]) << std::hex << w << " entry " << j;
    }
  }
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) {
    EXPECT_TRUE(compact_internal::FastIsVectorized());
  }
#endif
}

TEST(ClientCompactPositionsTest, DecodesHandBuiltMessages) {
  v1::CompactPositions delta;
  delta.set_count(4);
  // {0, 1, 5, 300}: 0, then gaps minus one 0, 3, 294 (= 0xA6 0x02).
  delta.set_delta_varint(std::string("\x00\x00\x03\xA6\x02", 5));
  absl::StatusOr<std::vector<int32_t>> d = DecodePositions(delta, 6);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, (std::vector<int32_t>{0, 1, 5, 300, -1, -1}));

  v1::CompactPositions bitmask;
  bitmask.set_count(4);
  bitmask.set_block_size(16);
  // Block 2: bits 0 and 9 -> 32, 41. Block 5 (gap minus one = 2): bits 1
  // and 15 -> 81, 95.
  bitmask.set_block_bitmask(std::string("\x02\x01\x02\x02\x02\x80", 6));
  d = DecodePositions(bitmask, 4);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, (std::vector<int32_t>{32, 41, 81, 95}));
}

TEST(ClientCompactPositionsTest, RejectsMalformedInput) {
  auto delta = [](uint32_t count, std::string bytes) {
    v1::CompactPositions w;
    w.set_count(count);
    w.set_delta_varint(std::move(bytes));
    return w;
  };
  auto bitmask = [](uint32_t count, uint32_t block_size, std::string bytes) {
    v1::CompactPositions w;
    w.set_count(count);
    w.set_block_size(block_size);
    w.set_block_bitmask(std::move(bytes));
    return w;
  };
  const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  // Truncated varint: continuation bit on the last byte.
  EXPECT_EQ(DecodeCode(delta(2, std::string("\x05\x80", 2)), 8), kInvalid);
  // Varint longer than an int32 position can need.
  EXPECT_EQ(DecodeCode(delta(1, std::string("\x80\x80\x80\x80\x80\x01", 6)), 8),
            kInvalid);
  // Count says more (or fewer) positions than the bytes hold.
  EXPECT_EQ(DecodeCode(delta(3, std::string("\x01\x01", 2)), 8), kInvalid);
  EXPECT_EQ(DecodeCode(delta(1, std::string("\x01\x01", 2)), 8), kInvalid);
  EXPECT_EQ(DecodeCode(delta(1, ""), 8), kInvalid);
  // More positions than k.
  EXPECT_EQ(DecodeCode(delta(3, std::string("\x00\x00\x00", 3)), 2), kInvalid);
  EXPECT_EQ(DecodeCode(delta(0, ""), -1), kInvalid);
  // A position past int32: 2^31 - 1 then a gap.
  EXPECT_EQ(DecodeCode(delta(2, std::string("\xFF\xFF\xFF\xFF\x07\x00", 6)), 8),
            kInvalid);
  // Bitmask: bad block sizes, truncated mask, count mismatch.
  EXPECT_EQ(DecodeCode(bitmask(1, 0, std::string("\x00\x01", 2)), 8), kInvalid);
  EXPECT_EQ(DecodeCode(bitmask(1, 12, std::string("\x00\x01\x00", 3)), 8),
            kInvalid);
  EXPECT_EQ(DecodeCode(bitmask(1, 16, std::string("\x00\x01", 2)), 8), kInvalid);
  EXPECT_EQ(DecodeCode(bitmask(3, 16, std::string("\x00\x03\x00", 3)), 8),
            kInvalid);
  EXPECT_EQ(DecodeCode(bitmask(1, 16, std::string("\x00\x03\x00", 3)), 8),
            kInvalid);
  // A block past int32 positions, even with an empty mask and count 0.
  EXPECT_EQ(DecodeCode(bitmask(0, 16, std::string("\xFF\xFF\xFF\xFF\x0F", 5) +
                                          std::string(2, '\0')),
                       8),
            kInvalid);
  // Bitmask block far past int32 positions.
  EXPECT_EQ(DecodeCode(bitmask(1, 1024, std::string("\xFF\xFF\xFF\x0F", 4) +
                                            std::string(127, '\0') + "\x01"),
                       8),
            kInvalid);
}

// Random corruption of valid messages never crashes and never yields
// anything but the contract or INVALID_ARGUMENT.
TEST(ClientCompactPositionsTest, CorruptedMessagesFailCleanly) {
  std::mt19937_64 rng(ref::TestSeed() + 5);
  int rejected = 0;
  for (int trial = 0; trial < 500; ++trial) {
    const std::vector<int32_t> pos =
        trial % 2 ? HisaLike(rng, 256, 64, 128, kK) : Sparse(rng, 1 << 24, 300);
    v1::CompactPositions wire;
    EncodePositions(Padded(pos, kK), 128, &wire);
    std::string* bytes = wire.has_block_bitmask() ? wire.mutable_block_bitmask()
                                                  : wire.mutable_delta_varint();
    switch (trial % 3) {
      case 0:  // flip a byte
        (*bytes)[rng() % bytes->size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 1:  // truncate
        bytes->resize(rng() % bytes->size());
        break;
      case 2:  // wrong count
        wire.set_count(wire.count() + 1 + static_cast<uint32_t>(rng() % 3));
        break;
    }
    absl::StatusOr<std::vector<int32_t>> d = DecodePositions(wire, kK);
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
      ++rejected;
      continue;
    }
    ASSERT_EQ(d->size(), static_cast<size_t>(kK));
    size_t n = 0;
    while (n < d->size() && (*d)[n] >= 0) ++n;
    EXPECT_EQ(n, wire.count());
    EXPECT_TRUE(std::adjacent_find(d->begin(), d->begin() + n,
                                   std::greater_equal<int32_t>()) ==
                d->begin() + n);
    for (size_t i = n; i < d->size(); ++i) EXPECT_EQ((*d)[i], -1);
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace hisa
