// Files that only this user may have written: the kernel store, KJIT_DUMP_DIR and the tuning
// database all keep state in folders another user could otherwise plant things in (a symlink to
// overwrite a file, a FIFO to hang a read, an entry to serve). The rules, in one place:
// folders are created 0700 and refused when they are symlinks, owned by another user or writable
// by group/others; files are opened without following symlinks and without blocking, must be
// regular, owned by this user and not writable by others; writes go to a temp file in the same
// folder that is fsync'ed and renamed over the target (never written in place).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kjit::detail {

// "" when `dir` is (or, with `create`, has been made) a private folder of this user; otherwise
// why not, as one sentence naming the folder.
std::string private_dir_problem(const std::filesystem::path& dir, bool create);

// Whether a file's owner and mode pass the rules (this user, or root for `root_ok`; not
// writable by group/others).
bool trusted_owner_and_mode(uid_t owner, mode_t mode, bool root_ok = false);

// Writes `bytes` to `path` atomically (temp file, fsync, rename); the file gets `mode`.
// Returns "" or why it failed.
std::string write_atomically(const std::filesystem::path& path, std::string_view bytes,
                             mode_t mode);

// Reads a regular file that passes the rules and is at most `max_bytes`; nullopt with `why` set
// otherwise (why stays empty when the file does not exist).
std::optional<std::string> read_trusted_file(const std::filesystem::path& path,
                                             std::uint64_t max_bytes, std::string* why);

}  // namespace kjit::detail
