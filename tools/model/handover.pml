/*
 * Ferry's hand-over protocol: source agent, destination agent and the
 * orchestrator's migration job, checked by spin (tools/model/check.sh).
 *
 * What it proves, under any interleaving, any lost request or reply between
 * the orchestrator and either host, a lost go on the migration link, and
 * one crash (source, destination or the orchestrator itself, which then
 * starts again from what the hosts say):
 *   - at most one copy of the guest runs (ltl one_runs);
 *   - the orchestrator never destroys a copy that may be the only one
 *     holding the guest's latest state (assertions in destroy_*).
 *
 * How the model maps to the code (docs/orchestrator.md, "The hand-over
 * invariant"):
 *   src_mig  S_ACTIVE    source status setup/active (guest runs)
 *            S_STOPPED   stop-and-copy, device state, waiting for ready
 *                        (agent/migration/source_phases.cpp switchover ..
 *                        handover)
 *            S_COMPLETED hooks.complete: status completed, guest paused
 *                        (postmigrate); go is sent after it
 *            S_ENDED     failed or cancelled: the source runs the guest again
 *   dst      D_RECEIVING incoming setup/active before the CPU state
 *            D_WHOLE     load_state done, ready sent, await_go
 *            D_RUNNING   go taken under the controller's lock: completed,
 *                        guest started (the model's guest ran on the source)
 *            D_FAILED    failed: fenced by migrate_cancel, link lost, or no
 *                        go within the link timeout; never runs
 *   Orch     the job's settle() and confirm_target()
 *            (orchestrator/job_settle.cpp): the labels below carry the
 *            same names.
 *
 * Broken variants, each of which the checker must refute (tests run them):
 *   -DBROKEN_CONT_FIRST       the old confirm timeout: cont the source, then
 *                             destroy the target
 *   -DBROKEN_DESTROY_ON_FAIL  the old failure path: destroy a created target
 *                             whatever the source says
 *   -DBROKEN_NO_FENCE         judge the target without migrate_cancel first
 *   -DBROKEN_DESTROY_BEFORE_CONT  after the fence, destroy the target before
 *                             the source resumes (the order first planned:
 *                             the checker found that a source dying in
 *                             between loses the guest)
 */

#define S_ACTIVE    0
#define S_STOPPED   1
#define S_COMPLETED 2
#define S_ENDED     3

#define D_RECEIVING 0
#define D_WHOLE     1
#define D_RUNNING   2
#define D_FAILED    3

byte src_mig = S_ACTIVE;
bool src_run = true;       /* the source's vCPUs run */
bool src_alive = true;     /* exists: not crashed, not destroyed */
byte dst = D_RECEIVING;
bool dst_alive = true;
bool all_sent = false;     /* the source sent the last pages and CPU state */
bool go_sent = false;      /* go is on the migration link */
bool crashed = false;      /* the one crash has happened */

/* Ghosts: what the copies hold. */
bool dst_ran = false;      /* the destination ever ran the guest */
bool src_resumed_late = false; /* the source ran again after completing */

#define SRC_RUNS (src_alive && src_run)
#define DST_RUNS (dst_alive && dst == D_RUNNING)

/* A copy holds the guest's latest state. */
#define SRC_HOLDS (src_alive && !dst_ran)
#define DST_HOLDS (dst_alive && (dst == D_RUNNING || \
                   ((dst == D_WHOLE || dst == D_FAILED) && all_sent && \
                    src_mig == S_COMPLETED && !src_resumed_late)))

ltl one_runs { [] !(SRC_RUNS && DST_RUNS) }

/* ---- the source agent ---------------------------------------------- */
active proctype Source() {
  do
  :: atomic { src_alive && src_mig == S_ACTIVE ->
       src_run = false; src_mig = S_STOPPED; all_sent = true }
  :: atomic { src_alive && src_mig == S_STOPPED && dst_alive && dst == D_WHOLE ->
       /* ready arrived; complete, then go */
       src_mig = S_COMPLETED; go_sent = true }
  :: atomic { src_alive && (src_mig == S_ACTIVE || src_mig == S_STOPPED) ->
       /* any error (link, destination gone): the source runs on */
       src_mig = S_ENDED; src_run = true }
  od
}

/* ---- the destination agent ----------------------------------------- */
active proctype Destination() {
  do
  :: atomic { dst_alive && dst == D_RECEIVING && all_sent -> dst = D_WHOLE }
  :: atomic { dst_alive && dst == D_WHOLE && go_sent ->
       go_sent = false; dst = D_RUNNING; dst_ran = true }
  :: atomic { go_sent -> go_sent = false }            /* the go is lost */
  :: atomic { dst_alive && (dst == D_RECEIVING || dst == D_WHOLE) ->
       dst = D_FAILED }                               /* link error, go timeout */
  od
}

/* ---- one crash -------------------------------------------------------- */
active proctype Crash() {
  if
  :: atomic { !crashed -> crashed = true; src_alive = false; src_run = false }
  :: atomic { !crashed -> crashed = true; dst_alive = false }
  :: skip
  fi
}

/* ---- the orchestrator's job ----------------------------------------- */
/* A request either reaches a live host (its effect happens, the reply may
 * still be lost) or it does not. `ok` is what the job learns. */

bool ok;
byte seen;

bool seen_run;
inline ask_source() {
  if
  :: atomic { src_alive -> ok = true; seen = src_mig; seen_run = src_run }
  :: ok = false
  fi
}

inline ask_target() {
  if
  :: dst_alive -> ok = true; seen = dst
  :: ok = false
  fi
}

inline cancel_source() {
  if
  :: atomic { src_alive && (src_mig == S_ACTIVE || src_mig == S_STOPPED) ->
       src_mig = S_ENDED; src_run = true }
  :: else -> skip
  fi
}

inline fence_target() {
  if
  :: atomic { dst_alive -> if
                           :: dst == D_RECEIVING || dst == D_WHOLE -> dst = D_FAILED
                           :: else -> skip
                           fi;
                           if :: ok = true :: ok = false fi }
  :: ok = false
  fi
}

inline destroy_target() {
  if
  :: atomic { dst_alive -> assert(!DST_HOLDS || SRC_HOLDS); dst_alive = false;
                           if :: ok = true :: ok = false fi }
  :: ok = false
  fi
}

inline destroy_source() {
  if
  :: atomic { src_alive -> assert(!SRC_HOLDS || DST_HOLDS); src_alive = false; src_run = false;
                           if :: ok = true :: ok = false fi }
  :: ok = false
  fi
}

inline cont_source() {
  if
  :: atomic { src_alive -> if
                           :: src_mig == S_COMPLETED && !src_run -> src_resumed_late = true
                           :: else -> skip
                           fi;
                           src_run = true;
                           if :: ok = true :: ok = false fi }
  :: ok = false
  fi
}

/* Whether the target host lists the guest: a live copy is listed, a gone
 * one is not, unless the host does not answer. */
bool listed;
inline list_target() {
  if
  :: ok = true; listed = dst_alive
  :: ok = false
  fi
}

active proctype Orch() {
  bool restarted = false;

poll:
  /* running: query-migrate on the source until it says something final,
   * or the job gives up (timeout, cancel, lost host). */
  do
  :: ask_source();
     if
     :: ok && seen == S_COMPLETED -> goto confirm
     :: ok && seen == S_ENDED -> goto settle
     :: ok -> skip                        /* still migrating */
     :: !ok -> goto settle                /* host lost */
     fi
  :: goto settle                          /* failure, cancel, escalation */
  od;

confirm:
  /* completing: the target must report its incoming migration completed. */
  ask_target();
  if
  :: ok && seen == D_RUNNING -> goto target_won
  :: else -> skip
  fi;
#ifdef BROKEN_CONT_FIRST
  cont_source();
  destroy_target();
  goto done;
#endif
  goto settle;

settle:
#ifdef BROKEN_DESTROY_ON_FAIL
  cancel_source();
  destroy_target();
  goto done;
#endif
  ask_source();
  if
  :: !ok -> goto source_unknown
  :: ok && seen == S_COMPLETED && seen_run -> goto remove_target /* took it back */
  :: ok && seen == S_COMPLETED && !seen_run -> goto fence
  :: ok && seen == S_ENDED -> goto remove_target
  :: ok && (seen == S_ACTIVE || seen == S_STOPPED) -> cancel_source(); goto settle
  fi;

remove_target:
  /* The source never completed, so it never sent go: the target cannot
   * be the guest. */
  destroy_target();
  goto done;

fence:
#ifndef BROKEN_NO_FENCE
  fence_target();
#else
  ok = true;
#endif
  if
  :: ok -> goto judge
  :: else -> goto check_target_absent
  fi;

judge:
  ask_target();
  if
  :: !ok -> goto hold
  :: ok && seen == D_RUNNING -> goto target_won
  :: else -> goto take_back
  fi;

check_target_absent:
  /* The fence did not answer. A target host that answers without the guest
   * lost it (a whole copy never exits on its own): it may have run. */
  list_target();
  goto hold;

take_back:
  /* The fenced target can never run: the source resumes first, then the
   * target goes. */
#ifdef BROKEN_DESTROY_BEFORE_CONT
  destroy_target();
  if
  :: !ok -> goto hold
  :: else -> skip
  fi;
  cont_source();
  goto done;
#endif
  cont_source();
  if
  :: !ok -> goto hold
  :: else -> skip
  fi;
  goto remove_target;

target_won:
  destroy_source();
  goto done;

source_unknown:
  ask_target();
  if
  :: ok && seen == D_RUNNING -> goto done
  :: else -> goto hold
  fi;

hold:
  /* Waits and asks again; or the orchestrator crashes and restarts, which
   * forgets the job's memory and starts from the journal (running). */
  if
  :: goto settle
  :: !crashed && !restarted -> atomic { crashed = true; restarted = true };
     goto poll
  fi;

done:
  skip
}
