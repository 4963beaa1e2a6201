-- The machine executor (runtime/machines): a task of a `machine:` job records the image it asks
-- for. While a process runs the machine driver, such tasks are claimed only by it (each gets a
-- virtual machine of its own); without one they run on the built-in runner's shell, as before.
-- NULL for every other task (and for a machine job whose class an admin gave to runners or Nomad).
ALTER TABLE tasks ADD COLUMN machine_image text;
