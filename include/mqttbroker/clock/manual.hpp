#ifndef MQTTBROKER_CLOCK_MANUAL_HPP
#define MQTTBROKER_CLOCK_MANUAL_HPP

#include <mqttbroker/clock/system.hpp>
#include <mqttbroker/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

MQTTBROKER_BEGIN_NAMESPACE
namespace clock {

/// A clock that moves only when told: tests drive Keep Alive, the CONNECT timeout, Will Delay and
/// Session Expiry through it in exact steps, with no sleeps. Copies share one time and one set of
/// timers, so a test keeps a copy and hands another to the broker:
///
///   clock::manual clk;
///   broker<my_policies> b(io, opts, {}, clk);   // my_policies::clock = clock::manual
///   clk.advance(std::chrono::seconds(3));       // due timers' handlers are posted
///   io.poll();                                  // ... and run
///
/// A timer's handler is posted to its executor when advance() passes its expiry, as Asio posts a
/// steady_timer's. A pending wait does not keep io_context::run() busy (no real time passes while
/// nothing runs), so a test settles with run() or poll() and then advances.
class manual {
  struct wait_op {
    virtual ~wait_op() = default;
    virtual void complete(std::error_code ec) = 0;
  };

  template <class Handler>
  struct wait_op_for final : wait_op {
    wait_op_for(Handler h, asio::any_io_executor e) : handler(std::move(h)), ex(std::move(e)) {}
    void complete(std::error_code ec) override {
      auto target = asio::get_associated_executor(handler, ex);
      asio::post(target, [h = std::move(handler), ec]() mutable { h(ec); });
    }
    Handler handler;
    asio::any_io_executor ex;
  };

  struct timer_node {
    asio::any_io_executor ex;
    system::steady_time expiry{};
    std::vector<std::unique_ptr<wait_op>> waits;
  };

  struct shared_state {
    std::atomic<system::steady_clock::rep> steady;
    std::atomic<std::chrono::system_clock::rep> system_ticks;
    std::mutex mutex;                  // guards the timers and their waits
    std::vector<timer_node*> timers;   // every live timer
  };

 public:
  using steady_clock = system::steady_clock;
  using steady_time = system::steady_time;
  using system_time = system::system_time;

  /// Starts at an arbitrary steady time and at 2026-01-01T00:00:00Z of system time.
  manual() : s_(std::make_shared<shared_state>()) {
    s_->steady.store(std::chrono::duration_cast<steady_clock::duration>(std::chrono::hours(1)).count());
    s_->system_ticks.store(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::seconds(1767225600)).count());
  }

  steady_time steady_now() const noexcept { return steady_time(steady_clock::duration(s_->steady.load())); }
  system_time system_now() const noexcept {
    return system_time(std::chrono::system_clock::duration(s_->system_ticks.load()));
  }

  /// A timer on this clock; movable, and like asio::steady_timer in the calls the broker makes.
  class timer {
   public:
    timer(std::shared_ptr<shared_state> s, asio::any_io_executor ex) : s_(std::move(s)), node_(new timer_node) {
      node_->ex = std::move(ex);
      std::lock_guard<std::mutex> lk(s_->mutex);
      s_->timers.push_back(node_.get());
    }
    timer(timer&&) noexcept = default;
    timer& operator=(timer&&) = delete;
    ~timer() {
      if (!node_) return;  // moved from
      cancel();
      std::lock_guard<std::mutex> lk(s_->mutex);
      auto& all = s_->timers;
      all.erase(std::find(all.begin(), all.end(), node_.get()));
    }

    /// Cancels pending waits, as Asio does, and sets the expiry from the clock's time.
    std::size_t expires_after(steady_clock::duration d) {
      const std::size_t n = cancel();
      std::lock_guard<std::mutex> lk(s_->mutex);
      node_->expiry = steady_time(steady_clock::duration(s_->steady.load())) + d;
      return n;
    }
    steady_time expiry() const {
      std::lock_guard<std::mutex> lk(s_->mutex);
      return node_->expiry;
    }

    /// `h(std::error_code)` runs once advance() reaches the expiry (at once, posted, when it has
    /// passed already), or with asio::error::operation_aborted when cancelled.
    template <class Handler>
    void async_wait(Handler&& h) {
      auto op = std::make_unique<wait_op_for<std::decay_t<Handler>>>(std::forward<Handler>(h), node_->ex);
      {
        std::lock_guard<std::mutex> lk(s_->mutex);
        if (node_->expiry > steady_time(steady_clock::duration(s_->steady.load()))) {
          node_->waits.push_back(std::move(op));
          return;
        }
      }
      op->complete(std::error_code());
    }

    std::size_t cancel() {
      std::vector<std::unique_ptr<wait_op>> ops;
      {
        std::lock_guard<std::mutex> lk(s_->mutex);
        ops.swap(node_->waits);
      }
      for (auto& op : ops) op->complete(asio::error::operation_aborted);
      return ops.size();
    }

   private:
    std::shared_ptr<shared_state> s_;
    std::unique_ptr<timer_node> node_;
  };
  using timer_type = timer;

  timer_type make_timer(const asio::any_io_executor& ex) const { return timer_type(s_, ex); }

  /// Moves both times forward by `d` and posts the handlers of every wait that is due, earliest
  /// expiry first. A handler that waits again is due only at a later advance().
  void advance(steady_clock::duration d) {
    std::vector<std::pair<steady_time, std::unique_ptr<wait_op>>> due;
    {
      std::lock_guard<std::mutex> lk(s_->mutex);
      const steady_time now = steady_now() + d;
      s_->steady.store(now.time_since_epoch().count());
      s_->system_ticks.fetch_add(std::chrono::duration_cast<std::chrono::system_clock::duration>(d).count());
      for (timer_node* t : s_->timers) {
        if (t->expiry > now) continue;
        for (auto& op : t->waits) due.emplace_back(t->expiry, std::move(op));
        t->waits.clear();
      }
    }
    std::stable_sort(due.begin(), due.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& d_op : due) d_op.second->complete(std::error_code());
  }

  /// Moves to `t` (no earlier than now).
  void advance_to(steady_time t) { advance(std::max(t, steady_now()) - steady_now()); }

  /// Sets the system time alone, either way, as a wall clock that jumps does (a board without a
  /// real-time clock that boots in 1970 and is set later); steady time and timers do not move.
  void set_system_time(system_time t) noexcept { s_->system_ticks.store(t.time_since_epoch().count()); }

  /// The earliest expiry among pending waits, if any: a test steps from one to the next so that a
  /// periodic timer fires at each of its periods.
  std::optional<steady_time> next_expiry() const {
    std::lock_guard<std::mutex> lk(s_->mutex);
    std::optional<steady_time> first;
    for (const timer_node* t : s_->timers)
      if (!t->waits.empty() && (!first || t->expiry < *first)) first = t->expiry;
    return first;
  }

 private:
  std::shared_ptr<shared_state> s_;
};

}  // namespace clock
MQTTBROKER_END_NAMESPACE

#endif  // MQTTBROKER_CLOCK_MANUAL_HPP
