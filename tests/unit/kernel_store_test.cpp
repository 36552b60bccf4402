// The on-disk kernel store: entry format, corruption handling, permissions, eviction, modes,
// strict mode, and concurrent writers (threads and processes).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "cache/store/kernel_store.hpp"
#include "cache/store/store_entry.hpp"
#include "jit/compile_plan.hpp"
#include "kjit/jit.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace {
namespace fs = std::filesystem;

CompiledProgram synthetic(std::uint64_t id, std::size_t cubin_bytes) {
  CompiledProgram p;
  p.key = CacheKey{id, ~id};
  p.description = "synthetic " + std::to_string(id);
  p.arch = "sm_90a";
  p.kernels.push_back({"k<" + std::to_string(id) + ">", "_Z1kILi1EEvv", ResourceUsage{}, 3});
  p.kernels.back().resources.registers = 42;
  p.cubin.assign(cubin_bytes, static_cast<char>(id));
  return p;
}

TEST(StoreEntry, RoundTripsAndRejectsDamage) {
  const CompiledProgram p = synthetic(7, 1000);
  const std::string bytes = store::serialize_entry(p, 1);
  auto parsed = store::parse_entry(bytes, p.key, 1);
  ASSERT_TRUE(std::holds_alternative<CompiledProgram>(parsed));
  const CompiledProgram& q = std::get<CompiledProgram>(parsed);
  EXPECT_EQ(q.description, p.description);
  EXPECT_EQ(q.arch, p.arch);
  EXPECT_EQ(q.cubin, p.cubin);
  ASSERT_EQ(q.kernels.size(), 1u);
  EXPECT_EQ(q.kernels[0].lowered_name, "_Z1kILi1EEvv");
  EXPECT_EQ(q.kernels[0].resources.registers, 42);
  EXPECT_EQ(q.kernels[0].parameter_count, 3);

  auto reason = [&](const std::string& b, const CacheKey& k, int version) {
    auto r = store::parse_entry(b, k, version);
    return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
  };
  // Every truncation is detected.
  for (std::size_t n = 0; n < bytes.size(); n += 97) {
    EXPECT_FALSE(reason(bytes.substr(0, n), p.key, 1).empty()) << "truncated to " << n;
  }
  // Every single-bit flip is detected.
  for (std::size_t i = 0; i < bytes.size(); i += 13) {
    std::string flipped = bytes;
    flipped[i] ^= 0x10;
    EXPECT_FALSE(reason(flipped, p.key, 1).empty()) << "bit flip at " << i;
  }
  EXPECT_NE(reason(bytes, p.key, 2).find("format version"), std::string::npos);
  EXPECT_NE(reason(bytes, CacheKey{1, 2}, 1).find("holds key"), std::string::npos);
  EXPECT_EQ(reason("garbage that is long enough to pass the header size check....", p.key, 1),
            "not a kjit entry");
}

class KernelStoreTest : public IsolatedCache {
 protected:
  store::KernelStore store(std::uint64_t cap = 1ull << 30) const {
    return store::KernelStore(cache_dir_.path(), cap, 1);
  }
};

TEST_F(KernelStoreTest, WritesPrivateShardedEntries) {
  const CompiledProgram p = synthetic(0xab, 100);
  ASSERT_TRUE(store().write(p));
  const fs::path path = store().entry_path(p.key);
  EXPECT_EQ(path.parent_path().filename(), p.key.hex().substr(0, 2));
  EXPECT_EQ(path.parent_path().parent_path().filename(), "v1");
  struct stat st {};
  ASSERT_EQ(::stat(store().folder().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = store().read(p.key);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->cubin, p.cubin);
  EXPECT_EQ(store().stats().entries, 1u);
  EXPECT_FALSE(store().read(CacheKey{1, 1})) << "absent key is a miss";
}

// After a format bump the older kjit's entries are never read again: stats counts them apart and
// clear removes them with their folders; a newer kjit's entries (a later format) stay.
TEST_F(KernelStoreTest, ClearAlsoRemovesOlderFormatsAndLeavesNewerOnes) {
  const fs::path root = cache_dir_.path();
  const store::KernelStore v1(root, 1ull << 30, 1), v2(root, 1ull << 30, 2),
      v3(root, 1ull << 30, 3);
  ASSERT_TRUE(v1.write(synthetic(1, 100)));
  ASSERT_TRUE(v1.write(synthetic(2, 300)));
  ASSERT_TRUE(v2.write(synthetic(3, 100)));
  ASSERT_TRUE(v3.write(synthetic(4, 100)));
  const store::KernelStore::Stats before = v2.stats();
  EXPECT_EQ(before.entries, 1u);
  EXPECT_EQ(before.older_format_entries, 2u);
  EXPECT_GT(before.older_format_bytes, 400u);
  EXPECT_EQ(v2.clear(), 3u);
  EXPECT_FALSE(fs::exists(root / "v1"));
  EXPECT_EQ(v2.stats().entries, 0u);
  EXPECT_EQ(v2.stats().older_format_entries, 0u);
  EXPECT_EQ(v3.stats().entries, 1u) << "a newer format's entries are not this kjit's to remove";
  EXPECT_EQ(v3.stats().older_format_entries, 0u);
}

TEST_F(KernelStoreTest, RefusesEntriesWritableByOthers) {
  const CompiledProgram p = synthetic(1, 100);
  ASSERT_TRUE(store().write(p));
  ASSERT_EQ(::chmod(store().entry_path(p.key).c_str(), 0666), 0);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(store().read(p.key));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("writable by other users"), std::string::npos) << err;
}

TEST_F(KernelStoreTest, RefusesToWriteIntoAFolderOthersCanWrite) {
  ASSERT_TRUE(store().write(synthetic(1, 10)));
  ASSERT_EQ(::chmod(store().folder().c_str(), 0777), 0);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(store().write(synthetic(2, 10)));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("writable by other users"), std::string::npos) << err;
  ::chmod(store().folder().c_str(), 0700);
}

TEST_F(KernelStoreTest, EvictsLeastRecentlyUsedUnderTheCap) {
  using namespace std::chrono_literals;
  const std::size_t kCubin = 10000;
  const CompiledProgram a = synthetic(1, kCubin), b = synthetic(2, kCubin),
                        c = synthetic(3, kCubin), d = synthetic(4, kCubin);
  const std::uint64_t entry = store::serialize_entry(a, 1).size();
  const store::KernelStore capped = store(2 * entry + entry / 2);  // room for two entries
  ASSERT_TRUE(store().write(a));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(store().write(b));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(store().write(c));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(store().read(a.key));  // a is now more recent than b and c
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(capped.write(d));
  EXPECT_LE(store().stats().bytes, 2 * entry + entry / 2);
  EXPECT_TRUE(store().read(a.key));
  EXPECT_TRUE(store().read(d.key));
  EXPECT_FALSE(store().read(b.key));
  EXPECT_FALSE(store().read(c.key));
}

TEST_F(KernelStoreTest, ClearRemovesEverything) {
  for (std::uint64_t i = 0; i < 5; ++i)
    ASSERT_TRUE(store().write(synthetic(i, 10)));
  EXPECT_EQ(store().clear(), 5u);
  EXPECT_EQ(store().stats().entries, 0u);
}

// The same through kjit::compile: damaged entries recompile and are replaced.
class StoreThroughCompile : public IsolatedCache {
 protected:
  static KernelSpec spec() {
    KernelSpec s(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::saxpy<float>"});
    s.arch = "sm_80";
    return s;
  }
  fs::path entry() const {
    return store::KernelStore(cache_dir_.path(), 1ull << 30, store::kFormatVersion)
        .entry_path(cache_key(spec()));
  }
  Origin compile_origin() {
    Origin o{};
    compile(spec(), &o);
    return o;
  }
  void expect_recompiles(const std::string& damage, const std::string& warning) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(compile_origin(), Origin::Compiled) << damage;
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find(warning), std::string::npos) << damage << ": " << err;
    EXPECT_EQ(compile_origin(), Origin::Disk) << damage << ": the entry was not replaced";
  }
};

TEST_F(StoreThroughCompile, SecondCompileIsADiskHit) {
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  EXPECT_EQ(compile_origin(), Origin::Disk);
}

TEST_F(StoreThroughCompile, TruncatedEntryRecompiles) {
  compile_origin();
  const std::string bytes = read_file(entry());
  write_file(entry(), bytes.substr(0, bytes.size() / 2));
  expect_recompiles("truncated", "ignoring cache entry");
}

TEST_F(StoreThroughCompile, BitFlippedEntryRecompiles) {
  compile_origin();
  std::string bytes = read_file(entry());
  bytes[bytes.size() - 100] ^= 0x01;
  write_file(entry(), bytes);
  expect_recompiles("bit flip", "bad checksum");
}

TEST_F(StoreThroughCompile, WrongVersionEntryRecompiles) {
  compile_origin();
  std::string bytes = read_file(entry());
  bytes[8] = 99;  // the format version field follows the 8-byte magic
  write_file(entry(), bytes);
  expect_recompiles("wrong version", "format version 99");
}

TEST_F(StoreThroughCompile, ForeignEntryRecompiles) {
  KernelSpec other = spec();
  other.name_expressions = {"kjit::samples::saxpy<double>"};
  compile(other);
  const fs::path other_entry =
      store::KernelStore(cache_dir_.path(), 1ull << 30, store::kFormatVersion)
          .entry_path(cache_key(other));
  write_file(entry(), read_file(other_entry));
  expect_recompiles("foreign", "holds key");
}

TEST_F(StoreThroughCompile, WorldWritableEntryRecompiles) {
  compile_origin();
  ASSERT_EQ(::chmod(entry().c_str(), 0666), 0);
  expect_recompiles("world-writable", "writable by other users");
}

TEST_F(StoreThroughCompile, CacheModes) {
  set_env("KJIT_CACHE", "off");
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  EXPECT_FALSE(fs::exists(entry()));
  set_env("KJIT_CACHE", "read");
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  EXPECT_FALSE(fs::exists(entry())) << "read mode must not write";
  set_env("KJIT_CACHE", "readwrite");
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  set_env("KJIT_CACHE", "read");
  EXPECT_EQ(compile_origin(), Origin::Disk);
  set_env("KJIT_CACHE", "sometimes");
  EXPECT_THROW(compile_origin(), Error);
}

TEST_F(StoreThroughCompile, StrictModeNamesTheMissingSpecialisation) {
  set_env("KJIT_NO_JIT", "1");
  try {
    compile(spec());
    FAIL() << "KJIT_NO_JIT=1 compiled";
  } catch (const MissingKernelError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("KJIT_NO_JIT"), std::string::npos) << what;
    EXPECT_NE(what.find(spec().describe()), std::string::npos) << what;
    EXPECT_NE(what.find(cache_key(spec()).hex()), std::string::npos) << what;
  }
  set_env("KJIT_NO_JIT", "0");
  EXPECT_EQ(compile_origin(), Origin::Compiled);
  set_env("KJIT_NO_JIT", "1");
  EXPECT_EQ(compile_origin(), Origin::Disk) << "strict mode serves what the store holds";
}

TEST_F(StoreThroughCompile, DumpDirKeepsSourcePtxCubinAndLog) {
  TempDir dump;
  set_env("KJIT_DUMP_DIR", dump.str());
  compile(spec());
  const fs::path dir = dump.path() / cache_key(spec()).hex();
  EXPECT_TRUE(fs::exists(dir / "source/samples/saxpy.cuh"));
  EXPECT_TRUE(fs::exists(dir / "source/common/indexing.cuh"));
  EXPECT_NE(read_file(dir / "options.txt").find("--gpu-architecture=sm_80"), std::string::npos);
  EXPECT_NE(read_file(dir / "kernel.ptx").find(".entry"), std::string::npos);
  EXPECT_EQ(read_file(dir / "kernel.cubin").substr(1, 3), "ELF");
  EXPECT_NE(read_file(dir / "log.txt").find("registers"), std::string::npos);
}

TEST_F(StoreThroughCompile, DebugModeAddsLineInfo) {
  TempDir dump;
  set_env("KJIT_DUMP_DIR", dump.str());
  set_env("KJIT_DEBUG", "lineinfo");
  compile(spec());
  const fs::path dir = dump.path() / cache_key(spec()).hex();
  EXPECT_NE(read_file(dir / "options.txt").find("-lineinfo"), std::string::npos);
  EXPECT_NE(read_file(dir / "kernel.ptx").find(".loc"), std::string::npos);
  set_env("KJIT_DEBUG", "everything");
  EXPECT_THROW(compile(spec()), Error);
}

TEST_F(StoreThroughCompile, ThreadsAskingForOneKeyCompileOnce) {
  constexpr int kThreads = 8;
  const Counters before = counters();
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  std::vector<std::string> cubins(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads)
        std::this_thread::yield();  // start together
      cubins[t] = compile(spec()).cubin;
    });
  }
  for (std::thread& t : threads)
    t.join();
  EXPECT_EQ(counters().compiles - before.compiles, 1u);
  for (const std::string& c : cubins)
    EXPECT_EQ(c, cubins[0]);
}

TEST_F(StoreThroughCompile, ProcessesRacingOnOneKeyLeaveOneValidEntry) {
  constexpr int kProcesses = 6;
  constexpr int kReads = 40;
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (int i = 0; i < kProcesses; ++i) {
    procs.push_back(std::make_unique<Subprocess>(
        std::vector<std::string>{test_helper_path(), "race", std::to_string(kReads)},
        std::vector<std::pair<std::string, std::string>>{{"KJIT_CACHE_DIR", cache_dir_.str()}}));
  }
  for (auto& p : procs) {
    const ProcessResult r = p->wait();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Each process compiled at most once (when it lost no race it read the winner's entry) and
    // every later read was a valid disk hit: a partial or corrupt read would have warned and
    // recompiled.
    unsigned long long compiles = 99, disk_hits = 0;
    ASSERT_EQ(std::sscanf(r.out.c_str(), "%llu %llu", &compiles, &disk_hits), 2) << r.out;
    EXPECT_LE(compiles, 1u) << r.err;
    EXPECT_EQ(compiles + disk_hits, static_cast<unsigned long long>(kReads + 1));
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(cache_dir_.path())) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  // The helper compiles for sm_90a; the fixture's entry() is for sm_80, so compare by listing.
  ASSERT_EQ(files.size(), 1u) << "expected exactly one entry and no temp files";
  EXPECT_EQ(files[0].extension(), ".kjit");
  KernelSpec helper_spec = spec();
  helper_spec.arch = "sm_90a";
  EXPECT_EQ(files[0].stem(), cache_key(helper_spec).hex());
  auto parsed =
      store::parse_entry(read_file(files[0]), cache_key(helper_spec), store::kFormatVersion);
  EXPECT_TRUE(std::holds_alternative<CompiledProgram>(parsed));
}

}  // namespace
}  // namespace kjit::test
