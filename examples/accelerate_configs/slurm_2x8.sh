#!/bin/bash
# Train a prior on 2 machines × 8 GPUs under SLURM: one `accelerate launch` per machine (srun starts it on each node),
# each starting 8 processes; machine 0's address is the rendezvous point. Submit from the repository root:
#   sbatch examples/accelerate_configs/slurm_2x8.sh
# Edit the partition, time and paths for your cluster; the data and --output_dir must be on a shared file system.
#SBATCH --job-name=vq-hub-prior
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

GPUS_PER_NODE=8
MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / GPUS_PER_NODE))

# The global batch stays 512 whatever the number of GPUs (the accumulation steps follow), so a resubmitted job
# resumes from the newest checkpoint even when it was written on another number of machines.
OUTPUT_DIR=outputs/imagenet-prior
SCRIPT=(examples/train_prior.py --codes_dir outputs/imagenet-codes --model_type llama --hidden_size 1024 \
  --num_layers 24 --num_heads 16 --train_batch_size 32 --global_batch_size 512 --learning_rate 1e-4 \
  --gradient_checkpointing --max_train_steps 300000 --checkpointing_steps 5000 --checkpoints_total_limit 2 \
  --output_dir "$OUTPUT_DIR")
if compgen -G "$OUTPUT_DIR/checkpoint-*" > /dev/null; then
  SCRIPT+=(--resume_from_checkpoint latest)
fi

# $SLURM_PROCID (the machine's rank) is read on each node, hence the single quotes.
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file examples/accelerate_configs/multi_gpu_2x8.yaml \
  --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * '"$GPUS_PER_NODE"')) \
  --machine_rank "$SLURM_PROCID" --main_process_ip '"$MAIN_PROCESS_IP"' --main_process_port 29500 "$@"' \
  bash "${SCRIPT[@]}"
