#pragma once
// A thin RAII layer over SQLite's C API: one connection, prepared statements, and transactions
// that roll back when the body throws. Errors are IoError naming the database and the SQL.
#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace perennial::sched {

class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& dbPath);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement(Statement&& o) noexcept;

  // Binds by 1-based position; returns *this so binds chain.
  Statement& bind(int i, int64_t v);
  Statement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Statement& bind(int i, double v);
  Statement& bind(int i, const std::string& v);
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Statement& bindNull(int i);
  Statement& bind(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bindNull(i); }

  // Steps once: true when a row is available.
  bool step();
  // Steps until done (for statements that return no rows).
  void run();

  int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;
  bool isNull(int col) const;
  const std::string& dbPath() const { return dbPath_; }  // the database file, for messages

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_, dbPath_;
};

class Database {
 public:
  // Opens (creating if needed) PATH in WAL mode with full fsync on commit and a busy timeout,
  // so other processes (the CLI's `sched trigger`, `sched status`) may use it concurrently.
  explicit Database(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  void exec(const std::string& sql);
  Statement prepare(const std::string& sql) { return Statement(db_, sql, path_); }
  int64_t lastInsertId() const { return sqlite3_last_insert_rowid(db_); }
  int changes() const { return sqlite3_changes(db_); }

  // Runs BODY inside BEGIN IMMEDIATE ... COMMIT (so a writer waits for the lock up front);
  // rolls back and rethrows when BODY throws. Not reentrant.
  void transaction(const std::function<void()>& body);

  const std::string& path() const { return path_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace perennial::sched
