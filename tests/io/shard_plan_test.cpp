#include <random>

#include <gtest/gtest.h>

#include "io/safetensors_writer.h"
#include "io_test_util.h"

namespace moeprep::io {
namespace {

using testing::bad_input;

PlannedTensor u8(const std::string& name, int64_t bytes) { return {name, Dtype::U8, Shape{bytes}}; }

std::vector<std::string> names_of(const ShardPlan& plan) {
  std::vector<std::string> names;
  for (const auto& t : plan.tensors) names.push_back(t.name);
  return names;
}

TEST(ShardPlan, RespectsTheBoundGreedilyInOrder) {
  std::mt19937 rng(11);
  std::vector<PlannedTensor> tensors;
  for (int i = 0; i < 200; ++i) tensors.push_back(u8("t" + std::to_string(i), static_cast<int64_t>(rng() % 300)));
  const uint64_t bound = 1000;
  auto plans = plan_shards(tensors, bound);
  ASSERT_GT(plans.size(), 1u);
  size_t next = 0;
  for (size_t s = 0; s < plans.size(); ++s) {
    uint64_t sum = 0;
    for (const auto& t : plans[s].tensors) {
      ASSERT_LT(next, tensors.size());
      EXPECT_EQ(t.name, tensors[next++].name);  // order kept, nothing lost or repeated
      sum += t.byte_length();
    }
    EXPECT_LE(sum, bound) << plans[s].file_name;
    EXPECT_FALSE(plans[s].tensors.empty());
    // Greedy: the first tensor of the next shard did not fit in this one.
    if (s + 1 < plans.size()) {
      EXPECT_GT(sum + plans[s + 1].tensors.front().byte_length(), bound);
    }
  }
  EXPECT_EQ(next, tensors.size());
}

TEST(ShardPlan, NamesShardsKOfN) {
  auto plans = plan_shards({u8("a", 6), u8("b", 6), u8("c", 6)}, 10);
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(plans[0].file_name, "model-00001-of-00003.safetensors");
  EXPECT_EQ(plans[1].file_name, "model-00002-of-00003.safetensors");
  EXPECT_EQ(plans[2].file_name, "model-00003-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(41, 120), "model-00042-of-00120.safetensors");
}

TEST(ShardPlan, ExactFitStaysInOneShard) {
  auto plans = plan_shards({u8("a", 4), u8("b", 6), u8("c", 1)}, 10);
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(names_of(plans[0]), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(names_of(plans[1]), (std::vector<std::string>{"c"}));
}

TEST(ShardPlan, TensorLargerThanBoundGetsItsOwnShard) {
  auto plans = plan_shards({u8("small1", 3), u8("huge", 50), u8("small2", 3), u8("small3", 3)}, 10);
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(names_of(plans[0]), (std::vector<std::string>{"small1"}));
  EXPECT_EQ(names_of(plans[1]), (std::vector<std::string>{"huge"}));
  EXPECT_EQ(names_of(plans[2]), (std::vector<std::string>{"small2", "small3"}));
  auto alone = plan_shards({u8("huge", 50)}, 10);
  ASSERT_EQ(alone.size(), 1u);
  EXPECT_EQ(alone[0].file_name, "model-00001-of-00001.safetensors");
}

TEST(ShardPlan, ByteLengthsUseDtypeSize) {
  PlannedTensor t{"w", Dtype::BF16, Shape{3, 5}};
  EXPECT_EQ(t.byte_length(), 30u);
  PlannedTensor f4{"q", Dtype::F4, Shape{2, 3}};
  EXPECT_EQ(f4.byte_length(), 3u);
  auto plans = plan_shards({{"x", Dtype::F32, Shape{2}}, {"y", Dtype::F32, Shape{2}}}, 8);
  EXPECT_EQ(plans.size(), 2u);  // 8 + 8 bytes over a bound of 8
}

TEST(ShardPlan, EmptyListGivesOneEmptyShard) {
  auto plans = plan_shards({}, 10);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_TRUE(plans[0].tensors.empty());
  EXPECT_EQ(plans[0].file_name, "model-00001-of-00001.safetensors");
}

TEST(ShardPlan, RejectsBadInput) {
  EXPECT_TRUE(testing::throws_error([] { plan_shards({u8("a", 1)}, 0); }, ErrorKind::Usage,
                                    {"max_shard_bytes must be positive"}));
  EXPECT_TRUE(bad_input([] { plan_shards({u8("a", 1), u8("b", 1), u8("a", 1)}, 10); },
                        {"tensor 'a' planned twice"}));
  EXPECT_TRUE(bad_input([] { plan_shards({u8("", 1)}, 10); }, {"tensor name is empty"}));
  EXPECT_TRUE(bad_input([] { plan_shards({u8("__metadata__", 1)}, 10); }, {"'__metadata__' cannot be a tensor name"}));
  EXPECT_TRUE(bad_input([] { plan_shards({{"neg", Dtype::U8, Shape{-2}}}, 10); }, {"tensor 'neg'", "negative"}));
}

}  // namespace
}  // namespace moeprep::io
