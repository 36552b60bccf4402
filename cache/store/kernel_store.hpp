// The on-disk kernel store: one self-describing file per compiled program under
//   <root>/v<format>/<first two hex digits of the key>/<key>.kjit
// Entries are published atomically (temp file in the same folder, fsync, rename), so readers
// never see a partial file and concurrent writers of one key need no lock: the last rename wins
// and both wrote equivalent programs. Anything unreadable, corrupt, oversized, not a regular file,
// foreign or writable by other users (the entry or a folder above it) is a miss with a warning
// (util/private_files.hpp has the rules). Total size is kept under a cap by evicting least
// recently used entries (a hit refreshes the entry's mtime, unless the store is read-only).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "kjit/jit.hpp"

namespace kjit::store {

class KernelStore {
 public:
  // A read-only store (KJIT_CACHE=read) never writes, evicts or touches an entry.
  KernelStore(std::filesystem::path root, std::uint64_t max_bytes, int format_version,
              bool read_only = false);

  std::optional<CompiledProgram> read(const CacheKey& key) const;
  // Publishes and then evicts down to the cap. Failures (read-only folder, full disk) warn and
  // return false: the program is still usable from memory.
  bool write(const CompiledProgram& program) const;

  struct Stats {
    std::uint64_t entries = 0;
    std::uint64_t bytes = 0;
    // Entries an older kjit wrote in an older format (<root>/v<n>, n below this one's): this
    // kjit never reads them; `clear` removes them.
    std::uint64_t older_format_entries = 0;
    std::uint64_t older_format_bytes = 0;
  };
  Stats stats() const;
  // Removes every entry and leftover temp file of this format version and of older ones (a newer
  // kjit's are left alone); returns how many entries.
  std::uint64_t clear() const;
  // Evicts least recently used entries until the total is at most `max_bytes`.
  void evict(std::uint64_t max_bytes) const;

  std::filesystem::path entry_path(const CacheKey& key) const;
  const std::filesystem::path& folder() const { return folder_; }

 private:
  // The store's folders down to `shard` are private (created 0700 when `create`); warns once and
  // returns false otherwise.
  bool folders_private(const std::filesystem::path& shard, bool create) const;
  // <root>/v<n> for every n below format_version_ that exists.
  std::vector<std::filesystem::path> older_format_folders() const;

  std::filesystem::path folder_;  // <root>/v<format>
  std::uint64_t max_bytes_;
  int format_version_;
  bool read_only_;
};

}  // namespace kjit::store
