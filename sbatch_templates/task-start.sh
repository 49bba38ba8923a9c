#!/usr/bin/env bash
# slurmserve's start of one Slurm task: `task-start.sh TASKS_FILE COMMAND...`, run by every task of a
# process's srun step. Shipped with slurmserve and copied into each run directory; plain shell (bash,
# coreutils, sed), so it runs wherever the task runs, in a container too. In a container, the part
# that needs slurmserve's Python runs on the node first, in a step of its own: `task-start.sh --prepare`
# (fresh folders and leftovers, then exit). From the environment the step sets:
#   SLURMSERVE_FRESH_DIRS  folders (node-local) the process must start without: emptied, except on a
#                          restart (SLURMSERVE_RESTART set), since etcd's data holds the workers' leases
#   SLURMSERVE_LEFTOVERS   globs of files a dead predecessor left on the node, removed once per node
#                          (by SLURMSERVE_PYTHON -m slurmserve.node.leftovers) unless a live process holds them
#   SLURMSERVE_GPUS        the process's planned GPUs, as indices into the GPUs Slurm granted the step
#   SLURMSERVE_GPU_GRANTS  (OCI containers) a folder with HOSTNAME.gpus: that grant, as the node saw it
#   SLURMSERVE_RANK_UCX/_HCA  one entry per MPI rank (";"-separated): this rank's HCAs
# It appends "node pid start-time pid-namespace boot-id wall-clock" to TASKS_FILE (`slurmserve cancel`
# checks with these records that nothing survives), then becomes COMMAND.
set -euo pipefail

tasks_file=$1
shift

if [ -z "${SLURMSERVE_RESTART:-}" ]; then
  read -ra fresh_dirs <<<"${SLURMSERVE_FRESH_DIRS:-}"
  for directory in "${fresh_dirs[@]}"; do
    rm -rf "$directory" && mkdir -p "$directory"
  done
fi

if [ -n "${SLURMSERVE_LEFTOVERS:-}" ] && [ "${SLURM_LOCALID:-0}" = 0 ]; then
  read -ra leftover_globs <<<"$SLURMSERVE_LEFTOVERS"
  "$SLURMSERVE_PYTHON" -m slurmserve.node.leftovers "${leftover_globs[@]}"
fi
[ "$tasks_file" != --prepare ] || exit 0

granted_gpus=${CUDA_VISIBLE_DEVICES:-}
if [ -z "$granted_gpus" ] && [ -n "${SLURMSERVE_GPU_GRANTS:-}" ]; then
  # In Slurm's OCI containers the task's own variables are missing: the grant the node preflight saw.
  granted_gpus=$(cat "$SLURMSERVE_GPU_GRANTS/$(cat /proc/sys/kernel/hostname).gpus" 2>/dev/null || true)
fi
if [ -n "${SLURMSERVE_GPUS:-}" ] && [ -n "$granted_gpus" ]; then
  IFS=, read -ra granted <<<"$granted_gpus"
  IFS=, read -ra planned <<<"$SLURMSERVE_GPUS"
  picked=""
  for index in "${planned[@]}"; do
    picked="$picked${picked:+,}${granted[$index]}"
  done
  export CUDA_VISIBLE_DEVICES=$picked
elif [ -n "${SLURMSERVE_GPUS:-}" ]; then
  export CUDA_VISIBLE_DEVICES=$SLURMSERVE_GPUS
fi

if [ -n "${SLURMSERVE_RANK_UCX:-}" ]; then  # the HCAs of this rank, by its place in the MPI world
  IFS=";" read -ra per_rank_ucx <<<"$SLURMSERVE_RANK_UCX"
  IFS=";" read -ra per_rank_hca <<<"${SLURMSERVE_RANK_HCA:?}"
  export UCX_NET_DEVICES=${per_rank_ucx[${SLURM_PROCID:-0}]} NCCL_IB_HCA=${per_rank_hca[${SLURM_PROCID:-0}]}
fi

read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ started _ < <(sed 's/^.*) //' "/proc/$$/stat")
record="$(cat /proc/sys/kernel/hostname) $$ $started $(readlink /proc/self/ns/pid) $(cat /proc/sys/kernel/random/boot_id) $(date +%s.%N)"
# One write of a whole line: a reader never sees half a record.
printf '%s\n' "$record" >>"$tasks_file"
exec "$@"
