#pragma once
// QMP jobs (QEMU's job API as the snapshot commands use it): each job has an
// id, a type and a status that moves along QEMU's JobStatus table, raising
// JOB_STATUS_CHANGE at each step; its work runs on a thread of its own
// ("qmp-job"); query-jobs lists them and job-dismiss forgets a concluded
// one. Jobs here finalize on their own and wait for job-dismiss, as
// snapshot-save/-load/-delete do in QEMU.

#include <caf/expected.hpp>

#include <boost/json/array.hpp>

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace ferry {

enum class job_status : uint8_t {
  undefined,
  created,
  running,
  waiting,
  pending,
  aborting,
  concluded,
  null,
};
inline constexpr size_t job_status_count = 8;
std::string_view to_string(job_status s);
// QEMU's JobStatus transition table, restricted to the states above.
bool job_transition_allowed(job_status from, job_status to);

class job_registry {
public:
  // `emit` sends an event line to every QMP client.
  explicit job_registry(std::function<void(std::string)> emit);
  ~job_registry(); // waits for running jobs
  job_registry(const job_registry&) = delete;
  job_registry& operator=(const job_registry&) = delete;

  // Why a job with `id` cannot be made, if so (QEMU's messages).
  std::optional<std::string> id_refusal(const std::string& id) const;
  // Creates the job and starts `work` on its thread; its error (if any)
  // concludes the job with that error.
  std::optional<std::string> start(const std::string& id, std::string type,
                                   std::function<caf::expected<void>()> work);
  boost::json::array query() const;
  // job-dismiss: an error text, or nothing.
  std::optional<std::string> dismiss(const std::string& id);

private:
  struct job {
    std::string id;
    std::string type;
    job_status status = job_status::undefined;
    std::string error;
    bool done = false;
    std::thread thread;
  };
  void move(job& j, job_status to); // caller holds mtx_
  void run(job& j, const std::function<caf::expected<void>()>& work);

  std::function<void(std::string)> emit_;
  mutable std::mutex mtx_;
  std::list<job> jobs_; // stable addresses: threads refer to their job
};

} // namespace ferry
