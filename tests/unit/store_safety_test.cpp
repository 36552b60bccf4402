// The kernel store, KJIT_DUMP_DIR, NVRTC's PCH folder and the JIT's environment under hostile or
// careless conditions (issue 8): symlinks planted in the dump folder, FIFOs and sparse giants at
// entry paths, folders other users can write, sizes that overflow, read-only mode that must not
// write, flags spelled in words.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "cache/store/kernel_store.hpp"
#include "jit/settings.hpp"
#include "kjit/jit.hpp"
#include "samples/samples.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace fs = std::filesystem;
namespace {

class StoreSafety : public IsolatedCache {
 protected:
  KernelSpec saxpy() const { return samples::saxpy("float", "sm_90a"); }
  fs::path entry_path() const {
    return detail::kernel_store(detail::current_settings()).entry_path(cache_key(saxpy()));
  }
  Origin compile_origin() {
    clear_memory_cache();
    Origin origin{};
    compile(saxpy(), &origin);
    return origin;
  }
};

TEST_F(StoreSafety, DumpFolderNeverWritesThroughASymlink) {
  TempDir dump, elsewhere;
  const fs::path victim = elsewhere.path() / "victim.txt";
  write_file(victim, "precious");
  ::chmod(victim.c_str(), 0600);
  const fs::path key_dir = dump.path() / cache_key(saxpy()).hex();
  fs::create_directories(key_dir);
  ::chmod(key_dir.c_str(), 0700);
  fs::create_symlink(victim, key_dir / "log.txt");
  set_env("KJIT_DUMP_DIR", dump.str());
  set_env("KJIT_CACHE", "off");
  compile(saxpy());
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(key_dir / "log.txt")))
      << "the log replaced the link";
  EXPECT_TRUE(fs::exists(key_dir / "kernel.cubin"));
}

TEST_F(StoreSafety, DumpFolderOthersCanWriteIsRefused) {
  TempDir dump;
  ::chmod(dump.path().c_str(), 0777);
  set_env("KJIT_DUMP_DIR", dump.str());
  set_env("KJIT_CACHE", "off");
  ::testing::internal::CaptureStderr();
  compile(saxpy());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("KJIT_DUMP_DIR"), std::string::npos) << err;
  EXPECT_NE(err.find("writable by other users"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(dump.path())) << "something was dumped into a shared folder";
}

TEST_F(StoreSafety, DumpFilesAndFoldersArePrivate) {
  TempDir dump;
  set_env("KJIT_DUMP_DIR", (dump.path() / "new").string());
  set_env("KJIT_CACHE", "off");
  compile(saxpy());
  const fs::path key_dir = dump.path() / "new" / cache_key(saxpy()).hex();
  struct stat st {};
  ASSERT_EQ(::stat(key_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((key_dir / "log.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(StoreSafety, CacheMaxBytesRefusesNonsenseAndOverflow) {
  auto parsed = [&](const char* value) -> std::string {
    set_env("KJIT_CACHE_MAX_BYTES", value);
    try {
      return std::to_string(detail::current_settings().cache_max_bytes);
    } catch (const Error& e) {
      return std::string("error: ") + e.what();
    }
  };
  EXPECT_EQ(parsed("4G"), std::to_string(4ull << 30));
  EXPECT_EQ(parsed("1g"), std::to_string(1ull << 30));
  EXPECT_EQ(parsed("2T"), std::to_string(2ull << 40));
  EXPECT_EQ(parsed("512MiB"), std::to_string(512ull << 20));
  EXPECT_EQ(parsed("1048576"), "1048576");
  for (const char* bad : {"17179869184G", "18446744073709551616", "-5", "abc", "4 G", " 4G", ""}) {
    if (std::string(bad).empty()) continue;  // unset: the default
    const std::string r = parsed(bad);
    EXPECT_EQ(r.rfind("error: KJIT_CACHE_MAX_BYTES=", 0), 0u) << bad << " -> " << r;
  }
}

TEST_F(StoreSafety, ACapBelowOneEntryWarnsOnce) {
  set_env("KJIT_CACHE_MAX_BYTES", "1");
  ::testing::internal::CaptureStderr();
  compile(saxpy());
  compile(samples::saxpy("double", "sm_90a"));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("smaller than one entry"), std::string::npos) << err;
  EXPECT_EQ(err.find("smaller than one entry"), err.rfind("smaller than one entry")) << err;
  EXPECT_FALSE(fs::exists(entry_path()));
}

TEST_F(StoreSafety, AFifoAtAnEntryPathIsAMissNotAHang) {
  compile(saxpy());  // creates the folders and the entry
  const fs::path entry = entry_path();
  fs::remove(entry);
  ASSERT_EQ(::mkfifo(entry.c_str(), 0600), 0);
  Subprocess p({cli_path(), "precompile", "--arch", "sm_90a", "--family", "samples", "-j", "1"},
               {{"KJIT_CACHE_DIR", cache_dir_.str()}});
  const ProcessResult r = p.wait_for(std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << "hung or failed: " << r.out << r.err;
  EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
}

TEST_F(StoreSafety, AHugeSparseEntryIsAMissAndIsReplaced) {
  compile(saxpy());
  const fs::path entry = entry_path();
  ASSERT_EQ(::truncate(entry.c_str(), 1ll << 40), 0);  // 1 TiB, sparse
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("more than any entry holds"), std::string::npos) << err;
  EXPECT_LT(fs::file_size(entry), 1u << 20) << "the bad entry was not replaced";
  EXPECT_EQ(compile_origin(), Origin::Disk);
}

TEST_F(StoreSafety, AFolderOthersCanWriteIsNotReadFrom) {
  compile(saxpy());
  EXPECT_EQ(compile_origin(), Origin::Disk);
  ::chmod(entry_path().parent_path().c_str(), 0777);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("not read"), std::string::npos) << err;
}

TEST_F(StoreSafety, ReadModeTouchesNothing) {
  compile(saxpy());
  const fs::path entry = entry_path();
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(24 * 365);
  fs::last_write_time(entry, old);
  set_env("KJIT_CACHE", "read");
  EXPECT_EQ(compile_origin(), Origin::Disk);
  EXPECT_EQ(fs::last_write_time(entry), old) << "a read-only hit refreshed the entry";
  const ProcessResult r =
      run_process({cli_path(), "cache", "clear"},
                  {{"KJIT_CACHE_DIR", cache_dir_.str()}, {"KJIT_CACHE", "read"}});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("KJIT_CACHE=read"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(entry));
}

TEST_F(StoreSafety, PchFilesLiveUnderTheCacheAndDeadProcessesLoseTheirs) {
  const fs::path dead = cache_dir_.path() / "pch" / "999999999";
  fs::create_directories(dead);
  write_file(dead / "leftover.pch", std::string(1024, 'x'));
  set_env("KJIT_CACHE", "off");  // compile for real, without the store
  compile(saxpy());
  EXPECT_FALSE(fs::exists(dead)) << "a dead process's PCH folder was kept";
  EXPECT_TRUE(fs::is_directory(cache_dir_.path() / "pch" / std::to_string(::getpid())));
}

TEST_F(StoreSafety, FlagsAcceptWordsAndRefuseNonsense) {
  set_env("KJIT_NO_JIT", "false");
  EXPECT_FALSE(detail::current_settings().no_jit);
  set_env("KJIT_NO_JIT", "True");
  EXPECT_TRUE(detail::current_settings().no_jit);
  set_env("KJIT_NO_JIT", "maybe");
  EXPECT_THROW(detail::current_settings(), Error);
  set_env("KJIT_NO_JIT", "0");
  set_env("KJIT_PCH", "no");
  EXPECT_FALSE(detail::pch_enabled());
  set_env("KJIT_DEBUG", "bogus");
  EXPECT_THROW(detail::current_settings(), Error) << "KJIT_DEBUG is checked with the settings";
}

}  // namespace
}  // namespace kjit::test
