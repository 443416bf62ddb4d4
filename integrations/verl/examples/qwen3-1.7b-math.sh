#!/usr/bin/env bash
# A real run of an AllocBench method inside verl 0.9.1: the `qwen3-1.7b-math` preset's settings
# (bench/presets.py: Qwen3-1.7B-Base on MATH, M = 128 prompts x G = 8, 3,072-token responses,
# 232 steps, lr 3e-6 with 23 warm-up steps and a cosine schedule, clip 0.2/0.2, dual clip 3,
# low-var KL loss 0.001, one update per step, temperature 0.9 / top-p 0.95, evaluation every 30
# steps with 4 samples at 0.9, a checkpoint every 10 steps, vLLM at 0.35 of GPU memory).
#
#   METHOD=knapsack BUDGET=0.5 DATA=data/verl MODEL=models/Qwen3-1.7B-Base \
#       bash integrations/verl/examples/qwen3-1.7b-math.sh [more hydra overrides]
#
# DATA holds train.parquet / val.parquet from prepare_math.py; POOL is the number of training
# rows it printed.  `python -m allocbench_verl --list` says which methods run.  The method's own
# options go in sampler_kwargs.options, e.g. '+trainer.v1.sampler.sampler_kwargs.options.alpha=2'.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
METHOD="${METHOD:-knapsack}"; BUDGET="${BUDGET:-1.0}"; SEED="${SEED:-0}"
DATA="${DATA:-data/verl}"; MODEL="${MODEL:-models/Qwen3-1.7B-Base}"; POOL="${POOL:-7497}"
GPUS="${GPUS:-8}"
M=128; G=8; L=3072
# data.train_batch_size = M: verl submits M prompts per step; a method that screens more
# candidates (MoPPS 16 x M, Pilot-Commit / SPEED-RL 3-4 x M, DAPO's refills) draws the rest
# through verl's dataloader one prompt at a time (gen_batch_size=1), and prompts a step does
# not use wait in the plugin's queue for the next draw

python -m verl.trainer.main_ppo \
    algorithm.adv_estimator=allocbench \
    algorithm.use_kl_in_reward=false \
    algorithm.norm_adv_by_std_in_grpo=true \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/val.parquet" \
    data.train_batch_size=$M \
    data.gen_batch_size=1 \
    data.max_prompt_length=512 \
    data.max_response_length=$L \
    data.shuffle=true \
    actor_rollout_ref.model.path="$MODEL" \
    "actor_rollout_ref.model.custom_chat_template='{% for m in messages %}{{ m[\"content\"] }}{% endfor %}'" \
    actor_rollout_ref.actor.optim.lr=3e-6 \
    actor_rollout_ref.actor.optim.lr_warmup_steps=23 \
    actor_rollout_ref.actor.optim.lr_scheduler_type=cosine \
    actor_rollout_ref.actor.ppo_mini_batch_size=$M \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.actor.ppo_epochs=1 \
    actor_rollout_ref.actor.grad_clip=1.0 \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    actor_rollout_ref.actor.clip_ratio_c=3.0 \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.use_kl_loss=true \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=$G \
    actor_rollout_ref.rollout.temperature=0.9 \
    actor_rollout_ref.rollout.top_p=0.95 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.35 \
    actor_rollout_ref.rollout.val_kwargs.n=4 \
    actor_rollout_ref.rollout.val_kwargs.temperature=0.9 \
    actor_rollout_ref.rollout.val_kwargs.top_p=0.95 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=true \
    actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent \
    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=allocbench_verl.manager.AllocBenchAgentLoopManager \
    reward.custom_reward_function.path="$HERE/math_verify_reward.py" \
    reward.custom_reward_function.name=compute_score \
    trainer.use_v1=true \
    trainer.v1.trainer_mode=sync \
    trainer.v1.sampler.custom_sampler.path=pkg://allocbench_verl.sampler \
    trainer.v1.sampler.custom_sampler.name=AllocBenchReplayBuffer \
    +trainer.v1.sampler.sampler_kwargs.method="$METHOD" \
    +trainer.v1.sampler.sampler_kwargs.prompts_per_step=$M \
    +trainer.v1.sampler.sampler_kwargs.group_size=$G \
    +trainer.v1.sampler.sampler_kwargs.budget_fraction="$BUDGET" \
    +trainer.v1.sampler.sampler_kwargs.steps=232 \
    +trainer.v1.sampler.sampler_kwargs.seed="$SEED" \
    +trainer.v1.sampler.sampler_kwargs.pool_size="$POOL" \
    trainer.total_training_steps=232 \
    trainer.test_freq=30 \
    trainer.save_freq=10 \
    trainer.val_before_train=true \
    trainer.n_gpus_per_node="$GPUS" \
    trainer.nnodes=1 \
    trainer.project_name=allocbench-verl \
    trainer.experiment_name="${METHOD}__b${BUDGET}__s${SEED}" \
    data.seed="$SEED" \
    "$@"
