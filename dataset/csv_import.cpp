#include "dataset/csv_import.h"

#include <csv.h>
#include <unistd.h>

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/read_file.h"

namespace perennial::data {
namespace stdfs = std::filesystem;
using json = nlohmann::json;

DatasetSpec CsvSchema::spec() const {
  DatasetSpec s;
  s.name = name;
  s.features = "features";
  s.labels = "targets";
  s.featureShape = {static_cast<int64_t>(features.size())};
  s.featureType = DType::kFloat32;
  s.targetType = regression ? DType::kFloat32 : DType::kInt64;
  s.numClasses = regression ? 0 : numClasses;
  return s;
}

CsvSchema parseCsvSchema(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(source + ": not valid JSON (" + e.what() + ")");
  }
  auto bad = [&](const std::string& field, const std::string& rule) {
    throw ConfigError(source + ": \"" + field + "\": " + rule);
  };
  if (!j.is_object()) bad("(top level)", "must be a JSON object");
  static const std::set<std::string> known{"name", "task", "features", "target", "classes", "num_classes", "ignore"};
  for (const auto& [k, v] : j.items()) {
    if (!known.count(k)) bad(k, "unknown field (known: name, task, features, target, classes, num_classes, ignore)");
  }
  auto str = [&](const char* k) {
    if (!j.contains(k) || !j[k].is_string() || j[k].get<std::string>().empty()) bad(k, "required, a non-empty string");
    return j[k].get<std::string>();
  };
  auto strList = [&](const char* k, bool required) {
    std::vector<std::string> out;
    if (!j.contains(k)) {
      if (required) bad(k, "required, a list of column names");
      return out;
    }
    if (!j[k].is_array()) bad(k, "must be a list of strings");
    std::set<std::string> seen;
    for (const auto& v : j[k]) {
      if (!v.is_string() || v.get<std::string>().empty()) bad(k, "must be a list of non-empty strings");
      if (!seen.insert(v.get<std::string>()).second) bad(k, "'" + v.get<std::string>() + "' is listed twice");
      out.push_back(v.get<std::string>());
    }
    return out;
  };
  CsvSchema s;
  s.name = str("name");
  const std::string task = str("task");
  if (task != "regression" && task != "classification") bad("task", "must be \"regression\" or \"classification\" (got \"" + task + "\")");
  s.regression = task == "regression";
  s.features = strList("features", true);
  if (s.features.empty()) bad("features", "must name at least one column");
  s.target = str("target");
  s.ignore = strList("ignore", false);
  s.classes = strList("classes", false);
  std::set<std::string> columns;
  for (const auto* list : {&s.features, &s.ignore}) {
    for (const auto& c : *list) {
      if (!columns.insert(c).second) bad("ignore", "'" + c + "' is also a feature");
    }
  }
  if (columns.count(s.target)) bad("target", "'" + s.target + "' is also listed under features or ignore");
  if (s.regression) {
    if (j.contains("classes") || j.contains("num_classes")) bad(j.contains("classes") ? "classes" : "num_classes", "only for task classification");
  } else {
    if (j.contains("classes") == j.contains("num_classes")) {
      bad("classes", "classification needs exactly one of \"classes\" (the labels as written) or \"num_classes\" (ids 0..K-1)");
    }
    if (j.contains("num_classes")) {
      if (!j["num_classes"].is_number_integer() || j["num_classes"].get<int64_t>() < 2) bad("num_classes", "must be an integer >= 2");
      s.numClasses = j["num_classes"].get<int64_t>();
    } else {
      if (s.classes.size() < 2) bad("classes", "must list at least 2 classes");
      s.numClasses = static_cast<int64_t>(s.classes.size());
    }
  }
  return s;
}

CsvSchema readCsvSchema(const std::string& path) {
  std::string text;
  try {
    text = fs::readFile(path);
  } catch (const IoError&) {
    throw ConfigError(path + ": cannot open the schema file");
  }
  return parseCsvSchema(text, path);
}

namespace {

// What the libcsv callbacks collect. Errors are recorded, not thrown: the callbacks run inside
// C code, which exceptions must not cross.
struct ParseState {
  const std::string* source;
  const CsvSchema* schema;
  CsvTable* table;
  int64_t maxRows = 0;
  int64_t line = 0;  // physical line being fed (1-based)
  bool haveHeader = false;
  std::vector<std::string> header;
  std::vector<int> featureColumn;  // header index of each feature
  int targetColumn = -1;
  std::map<std::string, int64_t> classIds;
  std::vector<std::optional<std::string>> fields;
  int64_t recordLine = 0;
  std::string error;
};

std::string where(const ParseState& st, int64_t line) { return *st.source + ":" + std::to_string(line); }

std::string quoteValue(const std::string& v) {
  std::string s = v.size() > 40 ? v.substr(0, 40) + "..." : v;
  return "'" + s + "'";
}

std::string columnName(const ParseState& st, size_t col) {
  return "column " + std::to_string(col + 1) + " '" + st.header[col] + "'";
}

void onField(void* data, size_t len, void* vs) {
  auto& st = *static_cast<ParseState*>(vs);
  if (!st.error.empty()) return;
  if (st.fields.empty()) st.recordLine = st.line;
  if (data) {
    st.fields.emplace_back(std::string(static_cast<const char*>(data), len));
  } else {
    st.fields.emplace_back(std::nullopt);
  }
}

void takeHeader(ParseState& st) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < st.fields.size(); ++i) {
    const std::string name = st.fields[i].value_or("");
    if (name.empty()) {
      st.error = where(st, st.recordLine) + ": header column " + std::to_string(i + 1) + " has no name";
      return;
    }
    if (!index.emplace(name, static_cast<int>(i)).second) {
      st.error = where(st, st.recordLine) + ": header names column '" + name + "' twice";
      return;
    }
    st.header.push_back(name);
  }
  const CsvSchema& s = *st.schema;
  std::set<std::string> declared(s.features.begin(), s.features.end());
  declared.insert(s.ignore.begin(), s.ignore.end());
  declared.insert(s.target);
  for (size_t i = 0; i < st.header.size(); ++i) {
    if (!declared.count(st.header[i])) {
      st.error = where(st, st.recordLine) + ": column " + std::to_string(i + 1) + " '" + st.header[i] +
                 "' is not in the schema (list it under \"ignore\" to skip it)";
      return;
    }
  }
  auto find = [&](const std::string& name, const char* role) {
    auto it = index.find(name);
    if (it == index.end()) {
      st.error = where(st, st.recordLine) + ": the header has no column '" + name + "' (the schema's " + role + ")";
      return -1;
    }
    return it->second;
  };
  for (const auto& f : s.features) {
    st.featureColumn.push_back(find(f, "feature"));
    if (!st.error.empty()) return;
  }
  st.targetColumn = find(s.target, "target");
  st.haveHeader = true;
}

// The float32 value of one field, or an error naming where it is.
bool parseNumber(ParseState& st, size_t col, float& out) {
  const auto& f = st.fields[col];
  if (!f || f->empty()) {
    st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": empty value (missing values are not supported: fill or drop the row)";
    return false;
  }
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(f->c_str(), &end);
  if (end == f->c_str() || *end != '\0') {
    st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": " + quoteValue(*f) + " is not a number";
    return false;
  }
  if (!std::isfinite(v) || std::fabs(v) > FLT_MAX) {
    st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": " + quoteValue(*f) +
               " is not a finite float32 value";
    return false;
  }
  out = static_cast<float>(v);
  return true;
}

bool parseLabel(ParseState& st, size_t col, int64_t& out) {
  const auto& f = st.fields[col];
  const CsvSchema& s = *st.schema;
  if (!f || f->empty()) {
    st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": empty label";
    return false;
  }
  if (!s.classes.empty()) {
    auto it = st.classIds.find(*f);
    if (it == st.classIds.end()) {
      st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": " + quoteValue(*f) +
                 " is not one of the schema's classes";
      return false;
    }
    out = it->second;
    return true;
  }
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(f->c_str(), &end, 10);
  if (end == f->c_str() || *end != '\0' || errno == ERANGE || v < 0 || v >= s.numClasses) {
    st.error = where(st, st.recordLine) + ": " + columnName(st, col) + ": " + quoteValue(*f) +
               " is not a class id in [0, " + std::to_string(s.numClasses) + ")";
    return false;
  }
  out = v;
  return true;
}

void onRecord(int, void* vs) {
  auto& st = *static_cast<ParseState*>(vs);
  if (!st.error.empty()) return;
  if (st.fields.empty()) return;
  if (!st.haveHeader) {
    takeHeader(st);
    st.fields.clear();
    return;
  }
  if (st.fields.size() != st.header.size()) {
    st.error = where(st, st.recordLine) + ": " + std::to_string(st.fields.size()) + " fields, the header has " +
               std::to_string(st.header.size());
    return;
  }
  if (st.maxRows > 0 && st.table->rows >= st.maxRows) {
    st.error = where(st, st.recordLine) + ": more than " + std::to_string(st.maxRows) + " rows (--max-rows)";
    return;
  }
  CsvTable& t = *st.table;
  for (int col : st.featureColumn) {
    float v = 0;
    if (!parseNumber(st, static_cast<size_t>(col), v)) return;
    t.features.push_back(v);
  }
  if (st.schema->regression) {
    float v = 0;
    if (!parseNumber(st, static_cast<size_t>(st.targetColumn), v)) return;
    t.values.push_back(v);
  } else {
    int64_t y = 0;
    if (!parseLabel(st, static_cast<size_t>(st.targetColumn), y)) return;
    t.labels.push_back(y);
  }
  ++t.rows;
  st.fields.clear();
}

int spaceOnly(unsigned char c) { return c == ' '; }

}  // namespace

void readCsv(std::istream& in, const std::string& source, const CsvSchema& schema, char delimiter,
             CsvTable& table, int64_t maxRows) {
  ParseState st;
  st.source = &source;
  st.schema = &schema;
  st.table = &table;
  st.maxRows = maxRows;
  for (size_t i = 0; i < schema.classes.size(); ++i) st.classIds[schema.classes[i]] = static_cast<int64_t>(i);
  // Rows of a failed document are not kept: the table is cut back to its size before.
  const int64_t rowsBefore = table.rows;
  auto rollback = [&] {
    table.rows = rowsBefore;
    table.features.resize(static_cast<size_t>(rowsBefore) * schema.features.size());
    if (schema.regression) {
      table.values.resize(static_cast<size_t>(rowsBefore));
    } else {
      table.labels.resize(static_cast<size_t>(rowsBefore));
    }
  };
  csv_parser p;
  if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL) != 0) {
    throw InternalError("csv_init failed");
  }
  csv_set_delim(&p, static_cast<unsigned char>(delimiter));
  if (delimiter == '\t') csv_set_space_func(&p, spaceOnly);
  struct Free {
    csv_parser* p;
    ~Free() { csv_free(p); }
  } freeParser{&p};
  std::string lineText;
  bool failed = false;
  while (std::getline(in, lineText)) {
    ++st.line;
    lineText.push_back('\n');
    if (csv_parse(&p, lineText.data(), lineText.size(), onField, onRecord, &st) != lineText.size()) {
      st.error = where(st, st.line) + ": malformed CSV (" + csv_strerror(csv_error(&p)) +
                 "; a quote inside a quoted field must be doubled)";
    }
    if (!st.error.empty()) {
      failed = true;
      break;
    }
  }
  if (!failed && csv_fini(&p, onField, onRecord, &st) != 0) {
    st.error = where(st, st.line) + ": malformed CSV at the end of the file (" + csv_strerror(csv_error(&p)) +
               ": a quoted field is not closed)";
  }
  if (st.error.empty() && in.bad()) st.error = source + ": read error";
  if (st.error.empty() && !st.haveHeader) st.error = source + ": empty (a header row naming the columns is required)";
  if (!st.error.empty()) {
    rollback();
    throw DataError(st.error);
  }
}

CsvImportSummary importCsv(const CsvImportOptions& o) {
  if (o.shardSize <= 0) throw ConfigError("--shard-size: must be positive (got " + std::to_string(o.shardSize) + ")");
  if (o.outDir.empty()) throw ConfigError("--out: required (the shard directory to create)");
  if (o.inputs.empty()) throw ConfigError("import-csv: no CSV files given");
  if (o.maxRows < 0) throw ConfigError("--max-rows: must be >= 0 (0: no limit)");
  if (fs::exists(o.outDir)) {
    throw ConfigError(o.outDir + ": already exists; remove it or import into another --out directory");
  }
  const CsvSchema schema = readCsvSchema(o.schemaPath);
  CsvTable table;
  for (const auto& path : o.inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(path + ": cannot open");
    readCsv(in, path, schema, o.delimiter, table, o.maxRows);
  }
  if (table.rows == 0) throw DataError(o.inputs.front() + (o.inputs.size() > 1 ? " (and the others)" : "") + ": no data rows");

  CsvImportSummary out;
  out.spec = schema.spec();
  out.rows = table.rows;
  const std::string tmpDir = o.outDir + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  stdfs::remove_all(tmpDir, ec);
  stdfs::create_directories(tmpDir);
  try {
    const size_t d = schema.features.size();
    for (int64_t begin = 0; begin < table.rows; begin += o.shardSize, ++out.shards) {
      const int64_t rows = std::min(o.shardSize, table.rows - begin);
      char file[32];
      std::snprintf(file, sizeof(file), "shard-%05zu.h5", out.shards);
      const void* targets = schema.regression ? static_cast<const void*>(table.values.data() + begin)
                                              : static_cast<const void*>(table.labels.data() + begin);
      writeShard(tmpDir + "/" + file, out.spec, table.features.data() + static_cast<size_t>(begin) * d, targets, rows);
    }
    fs::fsyncDir(tmpDir);
    stdfs::rename(tmpDir, o.outDir);
    const auto parent = stdfs::path(o.outDir).parent_path();
    fs::fsyncDir(parent.empty() ? "." : parent.string());
  } catch (...) {
    stdfs::remove_all(tmpDir, ec);
    throw;
  }
  return out;
}

}  // namespace perennial::data
