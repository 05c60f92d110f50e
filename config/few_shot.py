# Few-shot prompting: no training at all. Measure how well pretrained GPT-2 already models
# your data, then steer it with examples in the prompt:
#   python -m gptkit.train config/few_shot.py            # val loss of the untouched model
#   python -m gptkit.sample --init_from=gpt2 --start=FILE:config/few_shot_prompt.txt --max_new_tokens=60
# If the samples are good enough, you need no finetune; if not, this loss is the baseline to beat.
out_dir = 'out-few-shot'
dataset = 'shakespeare'
init_from = 'gpt2'
eval_only = True # evaluate once, write metrics.jsonl, train nothing, save nothing
eval_iters = 20
batch_size = 4
block_size = 1024
