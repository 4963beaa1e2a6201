// cdktf phones home for version checks unless told not to; tests run with no network.
process.env.CHECKPOINT_DISABLE = '1';
