"""Training stages: SFT (`sft.run`) and staged DPO (`dpo.run`) on TRL + PEFT."""
