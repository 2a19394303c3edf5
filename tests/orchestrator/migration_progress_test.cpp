// A job's query-migrate, parsed once into the cluster's figures; anything
// malformed (the agent is a peer, not trusted) gives no figures.

#include "orchestrator/migration_progress.hpp"

#include <gtest/gtest.h>

using namespace ferry;

TEST(migration_progress, figures_come_from_query_migrate_in_base_units) {
  const auto p = migration_progress::parse(
    R"({"status":"completed","total-time":2000,"downtime":40,"downtime-limit":300,)"
    R"("ram":{"transferred":800000000,"remaining":0,"dirty-sync-count":3,"mbps":3200}})");
  EXPECT_EQ(p.transferred, 800000000U);
  EXPECT_EQ(p.remaining, 0U);
  EXPECT_EQ(p.passes, 3U);
  ASSERT_TRUE(p.rate);
  EXPECT_DOUBLE_EQ(*p.rate, 400e6); // 3200 Mbit/s
  EXPECT_DOUBLE_EQ(p.total_s.value_or(0), 2.0);
  EXPECT_DOUBLE_EQ(p.downtime_s.value_or(0), 0.04);
  EXPECT_DOUBLE_EQ(p.downtime_limit_s.value_or(0), 0.3);
  EXPECT_DOUBLE_EQ(p.average_rate(), 400e6);
  EXPECT_EQ(p.raw.at("status"), "completed");
}

TEST(migration_progress, malformed_or_partial_input_gives_no_figures) {
  for (const char* text : {"", "not json", "[1,2]", "{\"ram\":7}", "{\"ram\":{\"transferred\":-5}}",
                           "{\"downtime-limit\":0}"}) {
    const auto p = migration_progress::parse(text);
    EXPECT_FALSE(p.transferred) << text;
    EXPECT_FALSE(p.rate) << text;
    EXPECT_FALSE(p.downtime_limit_s) << text << ": 0 means unknown";
    EXPECT_EQ(p.average_rate(), 0) << text;
  }
}
