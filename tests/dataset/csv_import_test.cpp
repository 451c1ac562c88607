// data import-csv: schema checks, RFC 4180 parsing and the errors that name file, line and column.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "dataset/csv_import.h"
#include "dataset/shard_dataset.h"

namespace perennial::data {
namespace {

CsvSchema regression() {
  return parseCsvSchema(R"({"name": "t", "task": "regression", "features": ["a", "b"], "target": "y", "ignore": ["id"]})",
                        "schema.json");
}

CsvSchema byName() {
  return parseCsvSchema(R"({"name": "t", "task": "classification", "features": ["a"], "target": "kind",
                            "classes": ["cat", "dog", "bird"]})",
                        "schema.json");
}

CsvTable parse(const std::string& text, const CsvSchema& s, char delimiter = ',', int64_t maxRows = 0) {
  std::istringstream in(text);
  CsvTable t;
  readCsv(in, "in.csv", s, delimiter, t, maxRows);
  return t;
}

std::string errorOf(const std::string& text, const CsvSchema& s) {
  try {
    parse(text, s);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CsvImport, ReadsColumnsByHeaderNameInSchemaOrder) {
  CsvTable t = parse("y,id,b,a\n1.5,7,20,10\n-2,8,40,30\n", regression());
  ASSERT_EQ(t.rows, 2);
  EXPECT_EQ(t.features, (std::vector<float>{10, 20, 30, 40}));
  EXPECT_EQ(t.values, (std::vector<float>{1.5f, -2.0f}));
}

TEST(CsvImport, QuotedFieldsCrlfAndEmbeddedNewlines) {
  CsvTable t = parse("id,a,b,y\r\n\"x,\"\"1\"\"\n2\",\"1e3\", 2 ,3\r\n\n9,4,5,6\r\n", regression());
  ASSERT_EQ(t.rows, 2);
  EXPECT_EQ(t.features, (std::vector<float>{1000, 2, 4, 5}));
}

TEST(CsvImport, TabDelimiter) {
  CsvTable t = parse("a\tb\ty\tid\n1\t2\t3\tz z\n", regression(), '\t');
  EXPECT_EQ(t.features, (std::vector<float>{1, 2}));
}

TEST(CsvImport, ClassLabelsByNameAndById) {
  CsvTable t = parse("kind,a\ndog,1\nbird,2\ncat,3\n", byName());
  EXPECT_EQ(t.labels, (std::vector<int64_t>{1, 2, 0}));
  auto ids = parseCsvSchema(R"({"name": "t", "task": "classification", "features": ["a"], "target": "y", "num_classes": 3})", "s");
  EXPECT_EQ(parse("a,y\n1,2\n", ids).labels, (std::vector<int64_t>{2}));
  EXPECT_NE(errorOf("a,y\n1,3\n", ids).find("in.csv:2: column 2 'y': '3' is not a class id in [0, 3)"), std::string::npos);
  EXPECT_NE(errorOf("kind,a\nfish,1\n", byName()).find("in.csv:2: column 1 'kind': 'fish' is not one of the schema's classes"),
            std::string::npos);
}

TEST(CsvImport, BadRowsNameLineColumnAndRule) {
  const auto s = regression();
  EXPECT_NE(errorOf("id,a,b,y\n1,2,3,4\n2,2,abc,4\n", s).find("in.csv:3: column 3 'b': 'abc' is not a number"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,2,3\n", s).find("in.csv:2: 3 fields, the header has 4"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,,3,4\n", s).find("in.csv:2: column 2 'a': empty value"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,nan,3,4\n", s).find("column 2 'a': 'nan' is not a finite float32 value"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,1e39,3,4\n", s).find("not a finite float32"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y,extra\n", s).find("in.csv:1: column 5 'extra' is not in the schema"), std::string::npos);
  EXPECT_NE(errorOf("id,a,y\n", s).find("the header has no column 'b' (the schema's feature)"), std::string::npos);
  EXPECT_NE(errorOf("id,a,a,b,y\n", s).find("names column 'a' twice"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,\"2,3,4\n", s).find("malformed CSV"), std::string::npos);
  EXPECT_NE(errorOf("id,a,b,y\n1,\"2\"x,3,4\n", s).find("in.csv:2: malformed CSV"), std::string::npos);
  EXPECT_NE(errorOf("", s).find("empty (a header row"), std::string::npos);
}

TEST(CsvImport, FailedDocumentLeavesTableAsBefore) {
  const auto s = regression();
  CsvTable t = parse("a,b,y\n1,2,3\n", s);
  std::istringstream bad("a,b,y\n4,5,6\n7,x,9\n");
  EXPECT_THROW(readCsv(bad, "bad.csv", s, ',', t), DataError);
  EXPECT_EQ(t.rows, 1);
  EXPECT_EQ(t.features.size(), 2u);
  EXPECT_EQ(t.values.size(), 1u);
}

TEST(CsvImport, MaxRowsRefusesLargerInputs) {
  EXPECT_THROW(parse("a,b,y\n1,2,3\n4,5,6\n", regression(), ',', 1), DataError);
  EXPECT_EQ(parse("a,b,y\n1,2,3\n", regression(), ',', 1).rows, 1);
}

TEST(CsvImport, SchemaErrorsNameTheField) {
  auto err = [](const std::string& text) {
    try {
      parseCsvSchema(text, "s.json");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(err("{").find("s.json: not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"x","features":["a"],"target":"y"})").find("\"task\": must be"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"regression","features":[],"target":"y"})").find("\"features\": must name at least one"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"regression","features":["a","a"],"target":"y"})").find("listed twice"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"regression","features":["a"],"target":"a"})").find("\"target\": 'a' is also"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"classification","features":["a"],"target":"y"})").find("exactly one of"), std::string::npos);
  EXPECT_NE(err(R"({"name":"t","task":"regression","features":["a"],"target":"y","colour":1})").find("\"colour\": unknown field"), std::string::npos);
}

TEST(CsvImport, ImportWritesReadableShardsAtomically) {
  const auto d = std::filesystem::temp_directory_path() / ("perennial-csv-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  std::ofstream(d / "schema.json") << R"({"name": "t", "task": "regression", "features": ["a", "b"], "target": "y"})";
  std::ofstream(d / "one.csv") << "a,b,y\n1,2,3\n4,5,6\n7,8,9\n";
  std::ofstream(d / "bad.csv") << "a,b,y\n1,2,3\n4,5\n";
  CsvImportOptions o;
  o.schemaPath = (d / "schema.json").string();
  o.inputs = {(d / "one.csv").string(), (d / "bad.csv").string()};
  o.outDir = (d / "out").string();
  o.shardSize = 2;
  EXPECT_THROW(importCsv(o), DataError);
  EXPECT_FALSE(std::filesystem::exists(d / "out")) << "nothing is written when a row is bad";
  o.inputs = {(d / "one.csv").string(), (d / "one.csv").string()};
  CsvImportSummary s = importCsv(o);
  EXPECT_EQ(s.rows, 6);
  EXPECT_EQ(s.shards, 3u);
  ShardedDataset ds(o.outDir);
  EXPECT_TRUE(ds.spec().regression());
  EXPECT_EQ(ds.spec().featureType, DType::kFloat32);
  std::vector<float> f(4), y(2);
  ds.readRows({5, 1}, f.data(), y.data());
  EXPECT_EQ(f, (std::vector<float>{7, 8, 4, 5}));
  EXPECT_EQ(y, (std::vector<float>{9, 6}));
  EXPECT_THROW(importCsv(o), ConfigError) << "an existing output directory is refused";
  std::filesystem::remove_all(d);
}

}  // namespace
}  // namespace perennial::data
