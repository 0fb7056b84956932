import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CandidateQueue } from '../../web/js/candidate-queue.js';

test('candidates wait until open(), then are applied in arrival order', async () => {
  const applied = [];
  const q = new CandidateQueue(async (c) => applied.push(c));
  await q.add('a');
  await q.add('b');
  assert.deepEqual(applied, []);
  assert.equal(q.size, 2);
  await q.open();
  assert.deepEqual(applied, ['a', 'b']);
  assert.equal(q.size, 0);
  await q.add('c');
  assert.deepEqual(applied, ['a', 'b', 'c'], 'after open, candidates pass straight through');
});

test('one bad candidate does not stop the others', async () => {
  const applied = [];
  const errors = [];
  const q = new CandidateQueue(
    async (c) => {
      if (c === 'bad') throw new Error('nope');
      applied.push(c);
    },
    { onError: (err, c) => errors.push([err.message, c]) },
  );
  await q.add('a');
  await q.add('bad');
  await q.add('b');
  await q.open();
  assert.deepEqual(applied, ['a', 'b']);
  assert.deepEqual(errors, [['nope', 'bad']]);
});

test('the queue is bounded', async () => {
  const q = new CandidateQueue(async () => {}, { limit: 3 });
  for (let i = 0; i < 10; i++) await q.add(i);
  assert.equal(q.size, 3);
});

test('clear() forgets waiting candidates and closes the queue again', async () => {
  const applied = [];
  const q = new CandidateQueue(async (c) => applied.push(c));
  await q.add('old');
  q.clear();
  assert.equal(q.size, 0);
  assert.equal(q.isOpen, false);
  await q.add('new');
  await q.open();
  assert.deepEqual(applied, ['new']);
});
