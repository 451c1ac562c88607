#pragma once
// `perennial data import-csv`: tables in CSV files -> HDF5 shards (shard_dataset.h) under a
// declared schema. No LibTorch.
//
// The schema is a JSON file:
//   {"name": "houses",                      the dataset's name (spec.name)
//    "task": "regression",                  or "classification"
//    "features": ["area", "rooms", "age"],  columns, in this order -> features float32 [N, D]
//    "target": "price",                     -> targets: float32 (regression) or int64 labels
//    "classes": ["cheap", "dear"],          classification: the labels as written in the CSV
//                                           (class id = position); or "num_classes": K when the
//                                           CSV holds the ids 0..K-1
//    "ignore": ["id"]}                      header columns to skip (any other unknown column is
//                                           an error, so a renamed column is never dropped silently)
// Every CSV file starts with a header row naming its columns (any order). Fields follow RFC 4180
// (quotes, embedded delimiters, quotes and newlines). A bad row is an error naming the file, the
// line, the column (number and name) and the rule; nothing is written unless every row is good.
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "dataset/shard_dataset.h"

namespace perennial::data {

struct CsvSchema {
  std::string name;
  bool regression = false;
  std::vector<std::string> features;
  std::string target;
  std::vector<std::string> classes;  // classification by name; empty: ids 0..numClasses-1
  int64_t numClasses = 0;
  std::vector<std::string> ignore;

  DatasetSpec spec() const;
};

// Parses and checks a schema; SOURCE names it in errors (ConfigError).
CsvSchema parseCsvSchema(const std::string& text, const std::string& source);
CsvSchema readCsvSchema(const std::string& path);

struct CsvTable {
  int64_t rows = 0;
  std::vector<float> features;  // rows x features.size()
  std::vector<float> values;    // regression targets
  std::vector<int64_t> labels;  // classification targets
};

// Appends the rows of one CSV document to TABLE. SOURCE names it in errors (DataError:
// "SOURCE:LINE: column N 'name': ..."). DELIMITER is one byte (',' or '\t' ...). Stops with an
// error after MAX_ROWS rows in all (0: no limit) so a hostile file cannot exhaust memory.
void readCsv(std::istream& in, const std::string& source, const CsvSchema& schema, char delimiter,
             CsvTable& table, int64_t maxRows = 0);

struct CsvImportOptions {
  std::string schemaPath;
  std::vector<std::string> inputs;  // CSV files, read in order
  std::string outDir;               // created; must not exist
  int64_t shardSize = 100000;
  char delimiter = ',';
  int64_t maxRows = 0;
};

struct CsvImportSummary {
  int64_t rows = 0;
  size_t shards = 0;
  DatasetSpec spec;
};

// Reads every input, then writes OUT_DIR/shard-NNNNN.h5 (into a temporary directory renamed at
// the end: OUT_DIR appears complete or not at all).
CsvImportSummary importCsv(const CsvImportOptions& options);

}  // namespace perennial::data
